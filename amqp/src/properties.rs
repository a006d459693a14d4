//! A zero-copy view of a content header's basic properties. Warren forwards the publisher's
//! property bytes verbatim (like RabbitMQ, it never re-encodes them unless it must change them),
//! so it only scans them for the few fields the broker acts on.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed content header properties")]
pub struct MalformedProperties;

/// The fields of `basic` properties the broker looks at, borrowed from the raw bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PropertiesView<'a> {
    pub content_type: Option<&'a [u8]>,
    pub headers: Option<&'a [u8]>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<&'a [u8]>,
    pub reply_to: Option<&'a [u8]>,
    pub expiration: Option<&'a [u8]>,
    pub message_id: Option<&'a [u8]>,
    pub timestamp: Option<u64>,
    pub user_id: Option<&'a [u8]>,
}

const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
const FLAG_HEADERS: u16 = 1 << 13;
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
const FLAG_PRIORITY: u16 = 1 << 11;
const FLAG_CORRELATION_ID: u16 = 1 << 10;
const FLAG_REPLY_TO: u16 = 1 << 9;
const FLAG_EXPIRATION: u16 = 1 << 8;
const FLAG_MESSAGE_ID: u16 = 1 << 7;
const FLAG_TIMESTAMP: u16 = 1 << 6;
const FLAG_TYPE: u16 = 1 << 5;
const FLAG_USER_ID: u16 = 1 << 4;
const FLAG_APP_ID: u16 = 1 << 3;
const FLAG_CLUSTER_ID: u16 = 1 << 2;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedProperties> {
        let end = self.pos.checked_add(n).ok_or(MalformedProperties)?;
        let s = self.buf.get(self.pos..end).ok_or(MalformedProperties)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, MalformedProperties> {
        Ok(self.take(1)?[0])
    }
    fn short_str(&mut self) -> Result<&'a [u8], MalformedProperties> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn table(&mut self) -> Result<&'a [u8], MalformedProperties> {
        let len = self.take(4)?;
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.take(n)
    }
}

impl<'a> PropertiesView<'a> {
    /// Scans `raw` (property flags then values, as in a content header after the body size).
    /// Field tables are only delimited here, not decoded.
    pub fn parse(raw: &'a [u8]) -> Result<Self, MalformedProperties> {
        let mut c = Cursor { buf: raw, pos: 0 };
        let f = c.take(2)?;
        let flags = u16::from_be_bytes([f[0], f[1]]);
        let mut v = PropertiesView::default();
        if flags & FLAG_CONTENT_TYPE != 0 {
            v.content_type = Some(c.short_str()?);
        }
        if flags & FLAG_CONTENT_ENCODING != 0 {
            c.short_str()?;
        }
        if flags & FLAG_HEADERS != 0 {
            v.headers = Some(c.table()?);
        }
        if flags & FLAG_DELIVERY_MODE != 0 {
            v.delivery_mode = Some(c.u8()?);
        }
        if flags & FLAG_PRIORITY != 0 {
            v.priority = Some(c.u8()?);
        }
        if flags & FLAG_CORRELATION_ID != 0 {
            v.correlation_id = Some(c.short_str()?);
        }
        if flags & FLAG_REPLY_TO != 0 {
            v.reply_to = Some(c.short_str()?);
        }
        if flags & FLAG_EXPIRATION != 0 {
            v.expiration = Some(c.short_str()?);
        }
        if flags & FLAG_MESSAGE_ID != 0 {
            v.message_id = Some(c.short_str()?);
        }
        if flags & FLAG_TIMESTAMP != 0 {
            let t = c.take(8)?;
            v.timestamp = Some(u64::from_be_bytes(
                t.try_into().map_err(|_| MalformedProperties)?,
            ));
        }
        if flags & FLAG_TYPE != 0 {
            c.short_str()?;
        }
        if flags & FLAG_USER_ID != 0 {
            v.user_id = Some(c.short_str()?);
        }
        if flags & FLAG_APP_ID != 0 {
            c.short_str()?;
        }
        if flags & FLAG_CLUSTER_ID != 0 {
            c.short_str()?;
        }
        Ok(v)
    }

    /// `delivery-mode` 2 asks for the message to be stored on durable queues.
    pub fn persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }
}

/// `raw` (property flags then values) with one more header, `name` set to the long-long integer
/// `value`: the entry is appended to the headers table in place (the table is added when there
/// is none), the other bytes kept as they are. None when `raw` is malformed, uses a second flags
/// word, or its headers may already hold `name` (the caller then decodes and re-encodes them).
pub fn with_long_long_header(raw: &[u8], name: &str, value: i64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len() + name.len() + 14);
    write_with_long_long_header(raw, name, value, &mut out).then_some(out)
}

/// As [`with_long_long_header`], appending to `out`; false (and `out` as it was) when that
/// would be None.
pub fn write_with_long_long_header(raw: &[u8], name: &str, value: i64, out: &mut Vec<u8>) -> bool {
    let Ok(name_len) = u8::try_from(name.len()) else {
        return false;
    };
    let mut c = Cursor { buf: raw, pos: 0 };
    let Ok(f) = c.take(2) else {
        return false;
    };
    let flags = u16::from_be_bytes([f[0], f[1]]);
    if flags & 1 != 0 {
        return false;
    }
    if flags & FLAG_CONTENT_TYPE != 0 && c.short_str().is_err() {
        return false;
    }
    if flags & FLAG_CONTENT_ENCODING != 0 && c.short_str().is_err() {
        return false;
    }
    let at = c.pos;
    let entry_len = 1 + name.len() + 1 + 8;
    let push_entry = |out: &mut Vec<u8>| {
        out.push(name_len);
        out.extend_from_slice(name.as_bytes());
        out.push(b'l');
        out.extend_from_slice(&value.to_be_bytes());
    };
    if flags & FLAG_HEADERS != 0 {
        let Ok(table) = c.table() else {
            return false;
        };
        if table.windows(name.len()).any(|w| w == name.as_bytes()) {
            return false;
        }
        let Ok(new_len) = u32::try_from(table.len() + entry_len) else {
            return false;
        };
        out.extend_from_slice(&raw[..at]);
        out.extend_from_slice(&new_len.to_be_bytes());
        out.extend_from_slice(table);
        push_entry(out);
        out.extend_from_slice(&raw[c.pos..]);
    } else {
        out.extend_from_slice(&(flags | FLAG_HEADERS).to_be_bytes());
        out.extend_from_slice(&raw[2..at]);
        out.extend_from_slice(&(entry_len as u32).to_be_bytes());
        push_entry(out);
        out.extend_from_slice(&raw[at..]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::WriteContext;
    use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
    use amq_protocol::types::{AMQPValue, FieldTable};
    use proptest::prelude::*;

    fn encode(props: &AMQPProperties) -> Vec<u8> {
        let (buf, _) = gen_properties(props)(WriteContext::from(Vec::new()))
            .unwrap()
            .into_inner();
        buf
    }

    proptest! {
        #[test]
        fn view_matches_amq_protocol(ct in proptest::option::of("[a-z/]{0,20}"), dm in proptest::option::of(1u8..3), prio in proptest::option::of(0u8..10),
                                     exp in proptest::option::of("[0-9]{0,8}"), mid in proptest::option::of("[a-z0-9-]{0,36}"), ts in proptest::option::of(any::<u64>()),
                                     hdr in proptest::option::of("[a-z]{1,10}"), uid in proptest::option::of("[a-z]{0,10}"), app in proptest::option::of("[a-z]{0,10}")) {
            let mut p = AMQPProperties::default();
            if let Some(ct) = &ct { p = p.with_content_type(ct.clone().into()); }
            if let Some(dm) = dm { p = p.with_delivery_mode(dm); }
            if let Some(prio) = prio { p = p.with_priority(prio); }
            if let Some(exp) = &exp { p = p.with_expiration(exp.clone().into()); }
            if let Some(mid) = &mid { p = p.with_message_id(mid.clone().into()); }
            if let Some(ts) = ts { p = p.with_timestamp(ts); }
            if let Some(h) = &hdr {
                let mut t = FieldTable::default();
                t.insert(h.clone().into(), AMQPValue::LongInt(7));
                p = p.with_headers(t);
            }
            if let Some(uid) = &uid { p = p.with_user_id(uid.clone().into()); }
            if let Some(app) = &app { p = p.with_app_id(app.clone().into()); }
            let raw = encode(&p);
            let v = PropertiesView::parse(&raw).unwrap();
            prop_assert_eq!(v.content_type, ct.as_deref().map(str::as_bytes));
            prop_assert_eq!(v.delivery_mode, dm);
            prop_assert_eq!(v.priority, prio);
            prop_assert_eq!(v.expiration, exp.as_deref().map(str::as_bytes));
            prop_assert_eq!(v.message_id, mid.as_deref().map(str::as_bytes));
            prop_assert_eq!(v.timestamp, ts);
            prop_assert_eq!(v.user_id, uid.as_deref().map(str::as_bytes));
            prop_assert_eq!(v.headers.is_some(), hdr.is_some());
            for cut in 0..raw.len() {
                let _ = PropertiesView::parse(&raw[..cut]);
            }
        }

        #[test]
        fn an_appended_header_reads_back_with_everything_else(ct in proptest::option::of("[a-z/]{0,20}"), ce in proptest::option::of("[a-z]{0,5}"),
                                     dm in proptest::option::of(1u8..3), hdr in proptest::option::of("[a-z]{1,10}"),
                                     app in proptest::option::of("[a-z]{0,10}"), value in any::<i64>()) {
            let mut p = AMQPProperties::default();
            if let Some(ct) = &ct { p = p.with_content_type(ct.clone().into()); }
            if let Some(ce) = &ce { p = p.with_content_encoding(ce.clone().into()); }
            if let Some(dm) = dm { p = p.with_delivery_mode(dm); }
            if let Some(h) = &hdr {
                let mut t = FieldTable::default();
                t.insert(h.clone().into(), AMQPValue::LongInt(7));
                p = p.with_headers(t);
            }
            if let Some(app) = &app { p = p.with_app_id(app.clone().into()); }
            let raw = encode(&p);
            let out = with_long_long_header(&raw, "x-stream-offset", value).unwrap();
            let (_, back) = amq_protocol::protocol::basic::parse_properties(out.as_slice()).unwrap();
            let mut want = p.headers().clone().unwrap_or_default();
            want.insert("x-stream-offset".into(), AMQPValue::LongLongInt(value));
            prop_assert_eq!(back.headers().clone(), Some(want));
            prop_assert_eq!(back.content_type(), p.content_type());
            prop_assert_eq!(back.content_encoding(), p.content_encoding());
            prop_assert_eq!(back.delivery_mode(), p.delivery_mode());
            prop_assert_eq!(back.app_id(), p.app_id());
            // A second time: the name is there already, so the caller must re-encode.
            prop_assert_eq!(with_long_long_header(&out, "x-stream-offset", 1), None);
            for cut in 0..raw.len() {
                let _ = with_long_long_header(&raw[..cut], "x-stream-offset", 1);
            }
        }
    }
}
