//! basic.publish: the publish method starts a message; once its content is in, it is checked
//! (permissions, properties, user id), routed (CC/BCC, deduplication), stored when persistent,
//! handed to its queues or returned, and confirmed. Also replies to direct reply-to requests.

use std::sync::Arc;

use warren_amqp::types::{AMQPValue, FieldTable};
use warren_amqp::{encode, AmqpError, Content, PropertiesView, Publish};

use crate::auth::Access;
use crate::connection::channel::TxPublish;
use crate::connection::Connection;
use crate::connection::PublishAllowed;
use crate::exchange::LazyHeaders;
use crate::management;
use crate::message::Message;
use crate::queue::log::durable_form;
use crate::queue::{PublishConfirm, QueueHandle};
use crate::reply_to;
use crate::tracking::bump;
use crate::vhost::{Routing, Vhost};

impl Connection {
    /// basic.publish: the message's content follows in header and body frames.
    pub(super) fn start_publish(&mut self, ch: u16, p: Publish) -> Result<(), AmqpError> {
        self.channel(ch)?.assembler.start(p);
        // A publisher from its first publish: an alarm blocks it before its body is in.
        if !self.published {
            self.published = true;
            self.update_blocked();
        }
        Ok(())
    }

    /// A complete message from the client: route it, store it in its queues (at commit in a
    /// transaction), confirm it.
    pub(super) async fn publish(&mut self, ch: u16, mut content: Content) -> Result<(), AmqpError> {
        if content.publish.immediate {
            // RabbitMQ refuses it once the whole message is in.
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        if !self.published {
            self.published = true;
            self.update_blocked();
        }
        self.counts.received += 1;
        let vhost = self.vhost()?;
        // The last exchange allowed is remembered, so a steady publisher costs a compare.
        let generation = self.broker.users.generation();
        let known = self.publish_allowed.as_ref().filter(|allowed| {
            allowed.generation == generation && allowed.exchange == content.publish.exchange
        });
        let topic_restricted = match known {
            Some(allowed) => allowed.topic_restricted,
            None => {
                let exchange = String::from_utf8_lossy(&content.publish.exchange);
                self.check_access(Access::Write, "exchange", &exchange)?;
                let topic_restricted =
                    self.broker
                        .users
                        .has_topic_permission(&self.user, &vhost.name, &exchange);
                self.publish_allowed = Some(PublishAllowed {
                    generation,
                    exchange: content.publish.exchange.clone(),
                    topic_restricted,
                });
                topic_restricted
            }
        };
        if topic_restricted {
            self.check_topic_access(
                Access::Write,
                &String::from_utf8_lossy(&content.publish.exchange),
                &String::from_utf8_lossy(&content.publish.routing_key),
            )?;
        }
        // The properties are parsed once for everything on the way in (checks, routing, the
        // message the queues keep); from a handle of their own, so that `content` can move on
        // while `props` lives. Malformed properties read as none.
        let raw_properties = content.properties.clone();
        let rewritten_properties;
        let mut props = PropertiesView::parse(&raw_properties).unwrap_or_default();
        if props.reply_to == Some(reply_to::PSEUDO_QUEUE.as_bytes()) {
            let key = self
                .channel(ch)?
                .reply_consumer
                .as_ref()
                .map(|(_, key)| key.clone());
            let Some(key) = key else {
                return Err(AmqpError::precondition_failed(
                    "fast reply consumer does not exist",
                ));
            };
            content.properties =
                with_reply_to(&content.properties, &format!("{}{key}", reply_to::PREFIX))
                    .ok_or_else(|| {
                        AmqpError::precondition_failed("cannot rewrite the reply_to property")
                    })?;
            // New bytes: the view is of what will be delivered.
            rewritten_properties = content.properties.clone();
            props = PropertiesView::parse(&rewritten_properties).unwrap_or_default();
        }
        validate_properties(&props)?;
        if let Some(user_id) = props.user_id {
            // RabbitMQ's `impersonator` tag lets a user publish as another.
            let impersonator = || {
                let tags = self.broker.users.tags(&self.user);
                tags.iter().any(|t| t == "impersonator")
            };
            if user_id != self.user.as_bytes() && !impersonator() {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    String::from_utf8_lossy(user_id),
                    self.user
                )));
            }
        }
        if content.publish.exchange.is_empty()
            && content
                .publish
                .routing_key
                .starts_with(reply_to::PREFIX.as_bytes())
        {
            return self.publish_direct_reply(ch, content, &props);
        }
        if content.publish.exchange == management::EXCHANGE.as_bytes() {
            return self
                .publish_management_request(ch, content, &props, vhost)
                .await;
        }
        if self.channel(ch)?.tx.is_some() {
            // A transaction's publishes are routed at commit, as in RabbitMQ (a queue deleted
            // meanwhile makes a mandatory one come back, one declared meanwhile takes it); the
            // exchange and the CC/BCC headers are checked now.
            vhost.check_publish_target(&String::from_utf8_lossy(&content.publish.exchange))?;
            if props.headers.is_some_and(may_have_sender_selected_keys) {
                sender_selected_keys(LazyHeaders::new(props.headers).get())?;
            }
            if let Some(tx) = self.channel(ch)?.tx.as_mut() {
                tx.publishes.push(TxPublish::new(content));
            }
            return Ok(());
        }
        self.route_and_deliver(ch, &vhost, content, &props).await
    }

    /// Adds the publishes tallied for the last exchange to its stats.
    pub(in crate::connection) fn flush_exchange_tally(&mut self) {
        if let Ok(vhost) = self.vhost() {
            self.exchange_tally.flush(|name, published, routed| {
                vhost.count_exchange_publishes(name, published, routed)
            });
        }
    }

    /// Routes a complete message and hands it to its queues (or returns it), confirming it in
    /// confirm mode.
    pub(super) async fn route_and_deliver(
        &mut self,
        ch: u16,
        vhost: &Vhost,
        mut content: Content,
        props: &PropertiesView<'_>,
    ) -> Result<(), AmqpError> {
        let headers = LazyHeaders::new(props.headers);
        let sender_selected = props.headers.is_some_and(may_have_sender_selected_keys);
        let (extra_keys, strip_bcc) = if sender_selected {
            sender_selected_keys(headers.get())?
        } else {
            (Vec::new(), false)
        };
        let exchange = String::from_utf8_lossy(&content.publish.exchange);
        let routing_key = String::from_utf8_lossy(&content.publish.routing_key);
        let rk: &str = &routing_key;
        let mut keys: Vec<&str> = Vec::new();
        let keys: &[&str] = if extra_keys.is_empty() {
            std::slice::from_ref(&rk)
        } else {
            keys.push(&routing_key);
            keys.extend(extra_keys.iter().map(String::as_str));
            &keys
        };
        let mut targets = std::mem::take(&mut self.route_buf);
        targets.clear();
        let routing = match vhost.route_publish(&exchange, keys, &headers, props, &mut targets) {
            Ok(routing) => routing,
            Err(e) => {
                self.route_buf = targets;
                return Err(e);
            }
        };
        drop(headers);
        let unroutable = targets.is_empty() && routing == Routing::Routed;
        self.exchange_tally.count(
            &content.publish.exchange,
            !targets.is_empty(),
            |name, published, routed| vhost.count_exchange_publishes(name, published, routed),
        );
        if unroutable {
            if content.publish.mandatory {
                self.counts.unroutable_returned += 1;
            } else {
                self.counts.unroutable_dropped += 1;
            }
        } else {
            self.counts.routed += 1;
        }
        if strip_bcc {
            content.properties = without_bcc(&content.properties).unwrap_or(content.properties);
        }
        let channel = self.channel(ch)?;
        let counts = &channel.info.counts;
        bump(&counts.publish, 1);
        if unroutable {
            let mandatory = content.publish.mandatory;
            bump(
                if mandatory {
                    &counts.return_unroutable
                } else {
                    &counts.drop_unroutable
                },
                1,
            );
        }
        let confirm_seq = channel.confirm.then(|| {
            channel.published += 1;
            channel.published
        });
        if confirm_seq.is_some() && !self.confirms_due.contains(&ch) {
            self.confirms_due.push(ch);
        }
        if routing == Routing::Duplicate {
            // Dropped, but confirmed (nothing to wait for): the message is already there.
            self.route_buf = targets;
            return Ok(());
        }
        let targets = self
            .deliver_publish(ch, targets, content, props, confirm_seq)
            .await;
        self.route_buf = targets;
        Ok(())
    }

    /// A request to the management exchange: answered apart (`crate::management`), and
    /// confirmed at once, as a routed publish is.
    async fn publish_management_request(
        &mut self,
        ch: u16,
        content: Content,
        props: &PropertiesView<'_>,
        vhost: Arc<Vhost>,
    ) -> Result<(), AmqpError> {
        management::spawn_request(
            self.broker.clone(),
            vhost,
            self.user.clone(),
            self.peer,
            content.body.clone(),
            props
                .reply_to
                .map(|r| String::from_utf8_lossy(r).into_owned()),
            props.correlation_id.map(<[u8]>::to_vec),
        )
        .await;
        self.confirm_at_once(ch)
    }

    /// Counts a publish that has nothing to wait for (a direct reply, a management request) and,
    /// in confirm mode, confirms it with the next batch of confirms.
    fn confirm_at_once(&mut self, ch: u16) -> Result<(), AmqpError> {
        let channel = self.channel(ch)?;
        if channel.confirm && channel.tx.is_none() {
            channel.published += 1;
            if !self.confirms_due.contains(&ch) {
                self.confirms_due.push(ch);
            }
        }
        Ok(())
    }

    /// A reply to a direct reply-to request: straight to the requester's channel.
    fn publish_direct_reply(
        &mut self,
        ch: u16,
        content: Content,
        props: &PropertiesView<'_>,
    ) -> Result<(), AmqpError> {
        let routing_key = String::from_utf8_lossy(&content.publish.routing_key).into_owned();
        let mandatory = content.publish.mandatory;
        let (exchange, properties, body) = (
            content.publish.exchange.clone(),
            content.properties.clone(),
            content.body.clone(),
        );
        let message = Message::from_published(content, None, props);
        let delivered = match self.broker.replies.route(&routing_key) {
            reply_to::ReplyRoute::Here => self.broker.replies.deliver(&routing_key, message),
            // Another node's channel: sent there (a mandatory reply is not returned if it is
            // gone there; RabbitMQ's cross-node replies are not either).
            reply_to::ReplyRoute::Node(node) => {
                if let Some(cluster) = self.broker.cluster.get() {
                    cluster.send_direct_reply(node, &routing_key, &message);
                }
                true
            }
        };
        if !delivered && mandatory {
            encode::write_return(
                &mut self.out,
                ch,
                312,
                "NO_ROUTE",
                &exchange,
                routing_key.as_bytes(),
            );
            encode::write_content(&mut self.out, ch, &properties, &body, self.frame_max);
        }
        self.confirm_at_once(ch)
    }

    /// Hands a routed message to its queues, or returns it (mandatory, no route). A persistent
    /// message bound for durable queues is logged by each of them; its confirm, if `confirm_seq`
    /// asks for one, waits for every one of their logs. Gives the emptied target list back.
    /// `props` are the message's properties as parsed on the way in (before a `BCC` header was
    /// taken out of `content`, which leaves the fields read here as they were).
    async fn deliver_publish(
        &mut self,
        ch: u16,
        mut targets: Vec<Arc<QueueHandle>>,
        content: Content,
        props: &PropertiesView<'_>,
        confirm_seq: Option<u64>,
    ) -> Vec<Arc<QueueHandle>> {
        if targets.is_empty() {
            if content.publish.mandatory {
                encode::write_return(
                    &mut self.out,
                    ch,
                    312,
                    "NO_ROUTE",
                    &content.publish.exchange,
                    &content.publish.routing_key,
                );
                encode::write_content(
                    &mut self.out,
                    ch,
                    &content.properties,
                    &content.body,
                    self.frame_max,
                );
            }
            return targets;
        }
        // A persistent message for durable queues is logged by each of them; its durable form
        // is made here, once (stored once for all of them when they are several).
        let durable_targets = if props.persistent() {
            targets.iter().filter(|q| q.logs_in_store()).count()
        } else {
            0
        };
        let (message, logged) = if durable_targets == 0 {
            (Message::from_published(content, None, props), None)
        } else {
            let store = &self.broker.store;
            let id = store.next_message_id();
            let message = Message::from_published(content, Some(id), props);
            match durable_form(store, &message, id, durable_targets) {
                Ok(logged) => (message, Some(logged)),
                Err(e) => {
                    // It cannot be stored (sealing failed): refused, as a failed write is.
                    tracing::error!("cannot store a message, dropped: {e}");
                    if let (Some(seq), Some(c)) = (confirm_seq, self.channels.get_mut(&ch)) {
                        c.expect_answers(seq, 1);
                        c.publish_settled(seq, false);
                    }
                    targets.clear();
                    return targets;
                }
            }
        };
        let mut waits = 0;
        for q in targets.drain(..) {
            let logged = q.logs_in_store().then(|| logged.clone()).flatten();
            // A queue that logs the message, or may refuse it (x-overflow reject-publish),
            // answers the confirm; so does one this connection consumes from, after the
            // deliveries it makes (as RabbitMQ orders them: a consumer on the publisher's
            // connection gets the delivery before the publisher gets the confirm). Others are
            // confirmed at once (no round through the queue: nobody could see the order).
            let confirm = match confirm_seq {
                Some(seq)
                    if logged.is_some() || q.may_reject_publish() || self.consumed.contains(&q) =>
                {
                    waits += 1;
                    Some(PublishConfirm::new(self.events_tx.clone(), ch, seq))
                }
                _ => None,
            };
            // A transaction's commit waits for the logs that have its messages: here, or (a
            // persistent message for a durable queue on another node, or a quorum queue's
            // group) there; a stream logs every message.
            if logged.is_some()
                || q.is_stream()
                || (q.answers_confirms() && q.durable && props.persistent())
            {
                if let Some(synced) = self.tx_logged.as_mut() {
                    if !synced.iter().any(|s| Arc::ptr_eq(s, &q)) {
                        synced.push(q.clone());
                    }
                }
            }
            q.publish(message.clone(), logged, confirm).await;
        }
        if let (Some(seq), Some(c)) = (confirm_seq, self.channels.get_mut(&ch)) {
            c.expect_answers(seq, waits);
        }
        targets
    }
}

/// A cheap look at a raw headers table for `CC` / `BCC` keys before decoding it.
fn may_have_sender_selected_keys(raw: &[u8]) -> bool {
    raw.windows(3).any(|w| w == b"\x02CC") || raw.windows(4).any(|w| w == b"\x03BCC")
}

/// Routing keys added by the `CC` and `BCC` headers (sender-selected distribution), and whether
/// a `BCC` header is there to be removed before delivery.
/// RabbitMQ takes them only as arrays (of long strings); anything else refuses the message.
fn sender_selected_keys(headers: &FieldTable) -> Result<(Vec<String>, bool), AmqpError> {
    let mut keys = Vec::new();
    for name in ["CC", "BCC"] {
        match headers.inner().get(name) {
            None => {}
            Some(AMQPValue::FieldArray(values)) => {
                for v in values.as_slice() {
                    if let AMQPValue::LongString(s) = v {
                        keys.push(String::from_utf8_lossy(s.as_bytes()).into_owned());
                    }
                }
            }
            Some(other) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid message: {{unacceptable_type_in_header,\"{name}\",{}}}",
                    crate::queue::args::type_name(other)
                )))
            }
        }
    }
    Ok((keys, headers.contains_key("BCC")))
}

/// The checks RabbitMQ makes on a message's properties before routing it.
pub(crate) fn validate_properties(props: &PropertiesView<'_>) -> Result<(), AmqpError> {
    if let Some(mode) = props.delivery_mode {
        if mode != 1 && mode != 2 {
            return Err(AmqpError::precondition_failed(format!(
                "invalid message: {{delivery_mode_unknown,{mode}}}"
            )));
        }
    }
    if let Some(raw) = props.expiration {
        let text = String::from_utf8_lossy(raw);
        match text.parse::<i64>() {
            Ok(n) if n < 0 => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid expiration '{text}': {{value_negative,{n}}}"
                )))
            }
            Ok(_) => {}
            Err(_) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid expiration '{text}': no_integer"
                )))
            }
        }
    }
    Ok(())
}

/// Re-encodes properties with another `reply_to`.
fn with_reply_to(raw: &[u8], reply_to: &str) -> Option<bytes::Bytes> {
    use warren_amqp::protocol::basic::parse_properties;
    let (_, props) = parse_properties(raw).ok()?;
    let props = props.with_reply_to(reply_to.into());
    encode::encode_properties(&props).ok().map(Into::into)
}

/// Re-encodes properties without the `BCC` header (never delivered, as in RabbitMQ).
fn without_bcc(raw: &[u8]) -> Option<bytes::Bytes> {
    use warren_amqp::protocol::basic::parse_properties;
    let (_, props) = parse_properties(raw).ok()?;
    let mut headers = props.headers().clone()?;
    let mut kept = FieldTable::default();
    for (k, v) in headers.inner() {
        if k.as_str() != "BCC" {
            kept.insert(k.clone(), v.clone());
        }
    }
    headers = kept;
    let props = props.with_headers(headers);
    encode::encode_properties(&props).ok().map(Into::into)
}
