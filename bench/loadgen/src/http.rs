//! HTTP/1.1 plumbing: request specs, one keep-alive connection, one exchange on it, and how an exchange fails.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug)]
pub enum Fail {
    /// The connection was closed before we could send (e.g. server ended keep-alive).
    Closed,
    /// The measured window ended while waiting: not an error, just stop.
    Deadline,
    Timeout,
    Transport(String),
    Status(u16, String),
    Invalid(String),
}

impl Fail {
    pub fn kind(&self) -> &'static str {
        match self {
            Fail::Closed => "closed",
            Fail::Deadline => "deadline",
            Fail::Timeout => "timeout",
            Fail::Transport(_) => "transport",
            Fail::Status(..) => "status",
            Fail::Invalid(_) => "invalid",
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Fail::Closed => "connection closed".into(),
            Fail::Deadline => "deadline".into(),
            Fail::Timeout => "request timed out".into(),
            Fail::Transport(e) => format!("transport error: {e}"),
            Fail::Status(c, b) => format!("HTTP {c}: {b}"),
            Fail::Invalid(m) => format!("invalid response: {m}"),
        }
    }
    pub fn kills_connection(&self) -> bool {
        matches!(self, Fail::Closed | Fail::Timeout | Fail::Transport(_))
    }
}

pub type Sender = SendRequest<Full<Bytes>>;

/// One header line of a request.
pub type Header = (HeaderName, HeaderValue);

pub fn hv(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|e| format!("bad header value: {e}"))
}

/// The fixed part of a request, built once and cloned for every iteration.
pub struct ReqSpec {
    method: Method,
    uri: Uri,
    headers: Vec<Header>,
    body: Bytes,
}

impl ReqSpec {
    pub fn new(
        method: Method,
        path: &str,
        headers: Vec<Header>,
        body: Bytes,
    ) -> Result<Self, String> {
        let uri: Uri = path.parse().map_err(|e| format!("bad path {path}: {e}"))?;
        Ok(ReqSpec {
            method,
            uri,
            headers,
            body,
        })
    }

    /// The request, with the `extra` headers after the fixed ones.
    pub fn build(
        &self,
        host: &HeaderValue,
        extra: Vec<Header>,
    ) -> Result<Request<Full<Bytes>>, Fail> {
        self.build_with_body(host, extra, self.body.clone())
    }

    /// [`ReqSpec::build`] with another body.
    pub fn build_with_body(
        &self,
        host: &HeaderValue,
        extra: Vec<Header>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, Fail> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .header(HOST, host.clone());
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        for (k, v) in extra {
            b = b.header(k, v);
        }
        b.body(Full::new(body))
            .map_err(|e| Fail::Invalid(format!("building request: {e}")))
    }
}

pub async fn connect(authority: &str, deadline: Instant, at_end: bool) -> Result<Sender, Fail> {
    let fut = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| Fail::Transport(format!("connect {authority}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Fail::Transport(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    };
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) if at_end => Err(Fail::Deadline),
        Err(_) => Err(Fail::Timeout),
    }
}

/// Send one request on the keep-alive connection and read the whole body.
pub async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
    deadline: Instant,
    at_end: bool,
) -> Result<(StatusCode, Bytes), Fail> {
    let fut = async {
        if sender.ready().await.is_err() {
            return Err(Fail::Closed);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Fail::Transport(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Fail::Transport(format!("reading body: {e}")))?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) if at_end => Err(Fail::Deadline),
        Err(_) => Err(Fail::Timeout),
    }
}

/// One request on a fresh connection, 10 s at most (the preflight).
pub async fn one(
    authority: &str,
    host: &HeaderValue,
    spec: &ReqSpec,
    extra: Vec<Header>,
) -> Result<(StatusCode, Bytes), String> {
    let dl = Instant::now() + Duration::from_secs(10);
    let mut s = connect(authority, dl, false)
        .await
        .map_err(|f| f.describe())?;
    let req = spec.build(host, extra).map_err(|f| f.describe())?;
    exchange(&mut s, req, dl, false)
        .await
        .map_err(|f| f.describe())
}
