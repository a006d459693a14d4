//! How `warren ctl` talks to a node: one [`Client::call`] that sends a management [`Request`]
//! and returns the answer's JSON or a typed [`ClientError`].
//!
//! The transport sits behind [`Transport`] so that management over AMQP (`--uri amqp://...`)
//! can be added as a second variant without touching the commands. The HTTP transport is a
//! plain HTTP/1.1 exchange over a tokio socket (one request per connection, `Connection: close`):
//! a CLI makes a handful of requests, and this keeps an HTTP client crate out of the broker's
//! dependencies.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer read (a definitions export of a big node fits comfortably).
const MAX_RESPONSE: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    BadUrl(String),
    #[error("cannot reach the node at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the node at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("credentials refused for user {user}")]
    CredentialsRefused { user: String },
    #[error("access refused: {reason}")]
    Forbidden { reason: String },
    #[error("{what} does not exist")]
    NotFound { what: String, missing: Missing },
    #[error("{reason}")]
    BadRequest { reason: String },
    #[error("the node answered {status}: {reason}")]
    Status { status: u16, reason: String },
    #[error("the node's answer is not understood: {0}")]
    BadResponse(String),
}

/// The HTTP verbs the management API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// What kind of object a request names, so that the node's "not found" exits with the code
/// rabbitmqctl gives for that object in that command (its codes differ by command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Anything else (a connection by name): 1.
    Object,
    /// A user: 67, EX_NOUSER.
    User,
    /// A vhost the command works in, a queue to purge, a policy to clear: 69.
    Unavailable,
    /// The vhost `delete_vhost` deletes: 65.
    DeletedVhost,
    /// The queue `delete_queue` deletes: 64.
    DeletedQueue,
}

impl Missing {
    pub fn exit_code(self) -> i32 {
        match self {
            Missing::Object => 1,
            Missing::User => super::EX_NOUSER,
            Missing::Unavailable => super::EX_UNAVAILABLE,
            Missing::DeletedVhost => super::EX_DATAERR,
            Missing::DeletedQueue => super::EX_USAGE,
        }
    }
}

/// One management operation: an API path (`/api/...`, segments already encoded with
/// [`segment`]), a JSON body, and what it is about, so that a 404 names the missing object.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    /// `X-Reason` (closing a connection).
    pub reason: Option<String>,
    /// The object named when the node answers 404, e.g. `user 'alice'`.
    pub object: String,
    /// The vhost the path names, named instead when the node says the vhost is missing.
    pub vhost: Option<String>,
    /// What `object` is, for the exit code when it is missing.
    pub missing: Missing,
}

impl Request {
    pub fn new(method: Method, path: String, object: impl Into<String>) -> Request {
        Request {
            method,
            path,
            body: None,
            reason: None,
            object: object.into(),
            vhost: None,
            missing: Missing::Object,
        }
    }

    pub fn missing(mut self, missing: Missing) -> Request {
        self.missing = missing;
        self
    }

    pub fn get(path: String, object: impl Into<String>) -> Request {
        Request::new(Method::Get, path, object)
    }

    pub fn body(mut self, body: Value) -> Request {
        self.body = Some(body);
        self
    }

    pub fn in_vhost(mut self, vhost: &str) -> Request {
        self.vhost = Some(vhost.to_owned());
        self
    }
}

/// `s` percent-encoded as one path segment (`/` is `%2F`, as the API's vhost `/` must be).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where a node is and who asks.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    /// As given (for messages), without a trailing `/`.
    url: String,
    host: String,
    port: u16,
    /// A path prefix before `/api` (a node behind a proxy), without a trailing `/`.
    prefix: String,
}

impl HttpTransport {
    /// `http://HOST[:PORT][/PREFIX]`; `https` is not supported yet.
    pub fn parse(url: &str) -> Result<HttpTransport, ClientError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            ClientError::BadUrl(format!("unsupported URL {url}: only http:// URLs are"))
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let bad = || ClientError::BadUrl(format!("bad URL {url}: expected http://HOST[:PORT]"));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 80,
        };
        Ok(HttpTransport {
            url: url.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            port,
            prefix: prefix.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn exchange(
        &self,
        request: &Request,
        credentials: &Credentials,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            url: self.url.clone(),
            reason: io_reason(&e),
        };
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(unreachable)?;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let body = match &request.body {
            Some(v) => v.to_string().into_bytes(),
            None => Vec::new(),
        };
        let mut head = format!(
            "{} {}{} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n\
             Accept: application/json\r\nConnection: close\r\n",
            request.method.as_str(),
            self.prefix,
            request.path,
        );
        if let Some(reason) = &request.reason {
            // A header value may not hold line breaks.
            let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
            head.push_str(&format!("X-Reason: {reason}\r\n"));
        }
        if request.body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        stream.write_all(&bytes).await.map_err(unreachable)?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut response)
            .await
            .map_err(unreachable)?;
        if response.len() > MAX_RESPONSE {
            return Err(ClientError::BadResponse(format!(
                "an answer larger than {MAX_RESPONSE} octets"
            )));
        }
        parse_response(&response)
    }
}

/// An I/O error as a short lowercase reason ("connection refused").
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::TimedOut => "timed out".into(),
        ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

/// An HTTP/1.1 response read to its end: the status and the body (de-chunked).
fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(response) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::BadResponse("the answer ended early".into()))
        }
        Err(e) => return Err(ClientError::BadResponse(e.to_string())),
    };
    let status = parsed
        .code
        .ok_or_else(|| ClientError::BadResponse("no status".into()))?;
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &response[head_len..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ClientError::BadResponse(format!("content-length {len}")))?;
        rest.get(..len)
            .ok_or_else(|| ClientError::BadResponse("the answer ended early".into()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

/// A chunked body's content.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, ClientError> {
    let bad = |what: &str| ClientError::BadResponse(format!("bad chunked body: {what}"));
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("no chunk size"))?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| bad("short chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| bad("short chunk"))?;
    }
}

/// How management requests travel: HTTP to the management API, or AMQP messages to the node's
/// management exchange (the same API behind it).
#[derive(Clone, Debug)]
pub enum Transport {
    Http(HttpTransport),
    Amqp(super::amqp::AmqpTransport),
}

#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A node's management API, as one user.
#[derive(Clone, Debug)]
pub struct Client {
    transport: Transport,
    credentials: Credentials,
    timeout: Duration,
}

impl Client {
    pub fn new(transport: Transport, credentials: Credentials, timeout: Duration) -> Client {
        Client {
            transport,
            credentials,
            timeout,
        }
    }

    /// Where requests go, for messages.
    pub fn target(&self) -> &str {
        match &self.transport {
            Transport::Http(http) => http.url(),
            Transport::Amqp(amqp) => amqp.url(),
        }
    }

    /// Sends `request`: the answer's JSON (`Null` for an empty body, as after a 204), or the
    /// failure typed by its cause.
    pub async fn call(&self, request: Request) -> Result<Value, ClientError> {
        let exchange = async {
            match &self.transport {
                Transport::Http(http) => http.exchange(&request, &self.credentials).await,
                Transport::Amqp(amqp) => amqp.exchange(&request).await,
            }
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.target().to_owned(),
                secs: self.timeout.as_secs(),
            })??;
        let json = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(&body)
        };
        if (200..300).contains(&status) {
            return json.map_err(|e| ClientError::BadResponse(format!("not JSON: {e}")));
        }
        let reason = match &json {
            Ok(v) => reason_of(v),
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        Err(match status {
            401 => ClientError::CredentialsRefused {
                user: self.credentials.username.clone(),
            },
            403 => ClientError::Forbidden { reason },
            404 => match (&request.vhost, reason.as_str()) {
                (Some(vhost), "vhost_not_found") => ClientError::NotFound {
                    what: format!("vhost '{vhost}'"),
                    missing: Missing::Unavailable,
                },
                _ => ClientError::NotFound {
                    what: request.object,
                    missing: request.missing,
                },
            },
            400 => ClientError::BadRequest { reason },
            _ => ClientError::Status { status, reason },
        })
    }
}

/// The `reason` of an API error body, as text (RabbitMQ's reasons are sometimes lists).
fn reason_of(v: &Value) -> String {
    match v.get("reason").or_else(|| v.get("error")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = HttpTransport::parse("http://localhost:15672/").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("localhost", 15672, "")
        );
        let t = HttpTransport::parse("http://[::1]:8080/mgmt").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("::1", 8080, "/mgmt")
        );
        assert!(HttpTransport::parse("https://x").is_err());
        assert!(HttpTransport::parse("http://x:port").is_err());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("a b.c"), "a%20b.c");
    }

    #[test]
    fn responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]").expect("ok");
        assert_eq!((s, b.as_slice()), (200, &b"[]"[..]));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n1\r\n]\r\n0\r\n\r\n";
        let (_, b) = parse_response(chunked).expect("chunked");
        assert_eq!(b, b"[1]");
        assert!(parse_response(b"HTTP/1.1 200").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n[]").is_err());
    }
}
