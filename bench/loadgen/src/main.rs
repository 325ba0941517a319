//! cardgate load generator.
//!
//! Closed loop: each of C workers owns ONE keep-alive HTTP/1.1 connection and
//! sends its next request only when the previous response has been fully read.
//! After a warm-up (not counted) the run is measured for a fixed duration; every
//! request that completes inside the measured window is recorded in a
//! log-bucketed latency histogram (<0.8 % relative error).
//!
//! Usage: `loadgen --help`.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// println! that ignores a closed stdout (e.g. piped into `head`) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

const USAGE: &str = "\
loadgen — closed-loop HTTP/1.1 keep-alive load generator for cardgate

USAGE:
  loadgen --scenario NAME [options]
  loadgen summarize RESULTS.jsonl      (table with ratios to healthz)

SCENARIOS:
  healthz            GET  /healthz                           -> 2xx
  token-jwt          POST /oauth2/token (client_credentials)  -> 200 {access_token}
  token-opaque       same as token-jwt (pass the opaque client's credentials)
  introspect-jwt     one token first, then POST /oauth2/introspect token=... -> {active:true}
  introspect-opaque  same as introspect-jwt (opaque client)
  card-pair          POST /v1/cards/ID/tokens -> {token}; then GET /v1/cards/ID/details
                     with Bearer token -> {pan}; one iteration = one pair

OPTIONS:
  --url URL             base URL, http only (default http://127.0.0.1:18080)
  --connections N, -c   concurrent keep-alive connections (default 64)
  --duration SECS       measured window (default 10)
  --warmup SECS         warm-up before the window, not counted (default 2)
  --server-pid PID      report server CPU per request and peak RSS from /proc/PID
  --client-id ID        OAuth client id (token/introspect/card-pair)
  --client-secret S     OAuth client secret
  --card-id ID          card id for card-pair
  --mint-auth MODE      card-pair mint auth: basic (default) or bearer (client_credentials token)
  --mint-body JSON      card-pair mint body (default {\"operations\":[\"VIEW_CARD\"]})
  --threads N           loadgen runtime threads (default 1: leaves the cores to the server)
  --timeout SECS        per-request timeout, counted as an error (default 5)
  --json-out FILE       also append the JSON result line to FILE
  -h, --help

OUTPUT: one human-readable line, then one JSON line (starts with '{'), on stdout.
Exit code: 0 ok, 2 the scenario had errors, 3 preflight failed, 1 usage/other.
";

// ---------------------------------------------------------------------------
// Histogram: log-linear buckets over nanoseconds, 64 sub-buckets per octave.

const SUB_BITS: u32 = 6; // 64 sub-buckets per power of two
const SUB: u64 = 1 << SUB_BITS;
const LINEAR: u64 = SUB * 2; // values < 128 ns are stored exactly
const NBUCKETS: usize = (LINEAR + (64 - (SUB_BITS as u64 + 1)) * SUB) as usize;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; NBUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as u64; // >= 7
        let m = v >> (e - SUB_BITS as u64); // in [64, 128)
        (LINEAR + (e - (SUB_BITS as u64 + 1)) * SUB + (m - SUB)) as usize
    }

    /// Midpoint of the bucket's value range.
    fn value_of(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < LINEAR {
            return idx;
        }
        let k = idx - LINEAR;
        let e = k / SUB + SUB_BITS as u64 + 1;
        let m = k % SUB + SUB;
        let shift = e - SUB_BITS as u64;
        let low = m << shift;
        low + ((1u64 << shift) >> 1)
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += *b;
        }
        self.total += o.total;
        self.sum_ns += o.sum_ns;
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    /// Percentile in milliseconds (q in 0..=1); 0 when empty.
    fn pct_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut acc = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            acc += *c;
            if acc >= rank {
                return (Self::value_of(i).min(self.max_ns)) as f64 / 1e6;
            }
        }
        self.max_ns as f64 / 1e6
    }

    fn mean_ms(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.sum_ns / self.total as u128) as f64 / 1e6
        }
    }

    fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }
}

// ---------------------------------------------------------------------------
// Configuration

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Healthz,
    Token,
    Introspect,
    CardPair,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MintAuth {
    Basic,
    Bearer,
}

struct Config {
    scenario_name: String,
    scenario: Scenario,
    url: String,
    authority: String,
    base_path: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    server_pid: Option<u32>,
    client_id: Option<String>,
    client_secret: Option<String>,
    card_id: Option<String>,
    mint_auth: MintAuth,
    mint_body: String,
    threads: usize,
    req_timeout: Duration,
    json_out: Option<String>,
}

fn parse_secs(flag: &str, v: &str) -> Result<Duration, String> {
    let t = v.trim().trim_end_matches('s');
    let f: f64 = t
        .parse()
        .map_err(|_| format!("{flag}: not a number of seconds: {v}"))?;
    if !(f > 0.0 && f < 86_400.0) {
        return Err(format!("{flag}: out of range: {v}"));
    }
    Ok(Duration::from_secs_f64(f))
}

fn parse_args(args: Vec<String>) -> Result<Config, String> {
    let mut scenario_name: Option<String> = None;
    let mut url = "http://127.0.0.1:18080".to_string();
    let mut connections = 64usize;
    let mut duration = Duration::from_secs(10);
    let mut warmup = Duration::from_secs(2);
    let mut server_pid = None;
    let mut client_id = None;
    let mut client_secret = None;
    let mut card_id = None;
    let mut mint_auth = MintAuth::Basic;
    let mut mint_body = r#"{"operations":["VIEW_CARD"]}"#.to_string();
    let mut threads = 1usize;
    let mut req_timeout = Duration::from_secs(5);
    let mut json_out = None;

    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut val = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--scenario" => scenario_name = Some(val()?),
            "--url" => url = val()?,
            "--connections" | "-c" => {
                connections = val()?
                    .parse()
                    .map_err(|_| "--connections: not a number".to_string())?
            }
            "--duration" => duration = parse_secs("--duration", &val()?)?,
            "--warmup" => {
                let v = val()?;
                warmup = if v.trim_end_matches('s') == "0" {
                    Duration::ZERO
                } else {
                    parse_secs("--warmup", &v)?
                }
            }
            "--server-pid" => {
                let v = val()?;
                if !v.is_empty() {
                    server_pid = Some(
                        v.parse()
                            .map_err(|_| "--server-pid: not a pid".to_string())?,
                    )
                }
            }
            "--client-id" => client_id = Some(val()?),
            "--client-secret" => client_secret = Some(val()?),
            "--card-id" => card_id = Some(val()?),
            "--mint-auth" => {
                mint_auth = match val()?.as_str() {
                    "basic" => MintAuth::Basic,
                    "bearer" => MintAuth::Bearer,
                    o => return Err(format!("--mint-auth: basic or bearer, not {o}")),
                }
            }
            "--mint-body" => mint_body = val()?,
            "--threads" => {
                threads = val()?
                    .parse()
                    .map_err(|_| "--threads: not a number".to_string())?
            }
            "--timeout" => req_timeout = parse_secs("--timeout", &val()?)?,
            "--json-out" => json_out = Some(val()?),
            o => return Err(format!("unknown argument: {o}")),
        }
    }

    let scenario_name = scenario_name.ok_or("--scenario is required")?;
    let scenario = match scenario_name.as_str() {
        "healthz" => Scenario::Healthz,
        "token-jwt" | "token-opaque" => Scenario::Token,
        "introspect-jwt" | "introspect-opaque" => Scenario::Introspect,
        "card-pair" => Scenario::CardPair,
        o => return Err(format!("unknown scenario: {o}")),
    };
    if scenario != Scenario::Healthz && (client_id.is_none() || client_secret.is_none()) {
        return Err(format!(
            "scenario {scenario_name} needs --client-id and --client-secret"
        ));
    }
    if scenario == Scenario::CardPair && card_id.is_none() {
        return Err("scenario card-pair needs --card-id".into());
    }
    if connections == 0 || connections > 10_000 {
        return Err("--connections must be 1..=10000".into());
    }
    if threads == 0 || threads > 64 {
        return Err("--threads must be 1..=64".into());
    }

    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must start with http:// (got {url})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("--url has no host: {url}"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let base_path = path.trim_end_matches('/').to_string();

    Ok(Config {
        scenario_name,
        scenario,
        url,
        authority,
        base_path,
        connections,
        duration,
        warmup,
        server_pid,
        client_id,
        client_secret,
        card_id,
        mint_auth,
        mint_body,
        threads,
        req_timeout,
        json_out,
    })
}

// ---------------------------------------------------------------------------
// Small helpers

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// application/x-www-form-urlencoded value encoding.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Percent-encode one path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(240)]).replace('\n', " ");
    if body.len() > 240 {
        format!("{s}…")
    } else {
        s
    }
}

fn hv(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|e| format!("bad header value: {e}"))
}

// ---------------------------------------------------------------------------
// /proc readers

/// utime+stime in clock ticks.
fn proc_cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some(ut + st)
}

/// A `VmXXX:   1234 kB` field of /proc/PID/status, in kB.
fn proc_status_kb(pid: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------
// HTTP plumbing

#[derive(Debug)]
enum Fail {
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
    fn kind(&self) -> &'static str {
        match self {
            Fail::Closed => "closed",
            Fail::Deadline => "deadline",
            Fail::Timeout => "timeout",
            Fail::Transport(_) => "transport",
            Fail::Status(..) => "status",
            Fail::Invalid(_) => "invalid",
        }
    }
    fn describe(&self) -> String {
        match self {
            Fail::Closed => "connection closed".into(),
            Fail::Deadline => "deadline".into(),
            Fail::Timeout => "request timed out".into(),
            Fail::Transport(e) => format!("transport error: {e}"),
            Fail::Status(c, b) => format!("HTTP {c}: {b}"),
            Fail::Invalid(m) => format!("invalid response: {m}"),
        }
    }
    fn kills_connection(&self) -> bool {
        matches!(self, Fail::Closed | Fail::Timeout | Fail::Transport(_))
    }
}

type Sender = SendRequest<Full<Bytes>>;

struct ReqSpec {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl ReqSpec {
    fn new(
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
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

    fn build(
        &self,
        host: &HeaderValue,
        extra: Option<(HeaderName, HeaderValue)>,
    ) -> Result<Request<Full<Bytes>>, Fail> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .header(HOST, host.clone());
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        if let Some((k, v)) = extra {
            b = b.header(k, v);
        }
        b.body(Full::new(self.body.clone()))
            .map_err(|e| Fail::Invalid(format!("building request: {e}")))
    }
}

async fn connect(
    authority: &str,
    deadline: tokio::time::Instant,
    at_end: bool,
) -> Result<Sender, Fail> {
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
async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
    deadline: tokio::time::Instant,
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

fn expect_2xx(status: StatusCode, body: &[u8]) -> Result<(), Fail> {
    if status.is_success() {
        Ok(())
    } else {
        Err(Fail::Status(status.as_u16(), snippet(body)))
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Fail> {
    serde_json::from_slice(body)
        .map_err(|e| Fail::Invalid(format!("not JSON ({e}): {}", snippet(body))))
}

fn json_str_field(v: &Value, key: &str, body: &[u8]) -> Result<String, Fail> {
    match v.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(Fail::Invalid(format!(
            "no string field {key:?} in {}",
            snippet(body)
        ))),
    }
}

fn check_token_response(status: StatusCode, body: &[u8]) -> Result<String, Fail> {
    expect_2xx(status, body)?;
    let v = parse_json(body)?;
    json_str_field(&v, "access_token", body)
}

fn check_introspect_response(status: StatusCode, body: &[u8]) -> Result<(), Fail> {
    expect_2xx(status, body)?;
    let v = parse_json(body)?;
    match v.get("active") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(Fail::Invalid(format!(
            "token not active: {}",
            snippet(body)
        ))),
    }
}

fn check_mint_response(status: StatusCode, body: &[u8]) -> Result<String, Fail> {
    if status != StatusCode::OK && status != StatusCode::CREATED {
        return Err(Fail::Status(status.as_u16(), snippet(body)));
    }
    let v = parse_json(body)?;
    json_str_field(&v, "token", body)
}

fn check_details_response(status: StatusCode, body: &[u8]) -> Result<(), Fail> {
    if status != StatusCode::OK {
        return Err(Fail::Status(status.as_u16(), snippet(body)));
    }
    let v = parse_json(body)?;
    match v.get("pan") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(Fail::Invalid(format!(
            "no pan in details: {}",
            snippet(body)
        ))),
    }
}

// ---------------------------------------------------------------------------
// Scenario context shared by workers

struct Ctx {
    scenario: Scenario,
    authority: String,
    host: HeaderValue,
    /// healthz / token / introspect request, or the card mint request.
    main: ReqSpec,
    /// card-pair redeem request (Bearer added per iteration).
    redeem: Option<ReqSpec>,
    req_timeout: Duration,
}

#[derive(Clone, Copy)]
struct Times {
    start: tokio::time::Instant,
    end: tokio::time::Instant,
}

impl Times {
    fn in_window(&self, t: tokio::time::Instant) -> bool {
        t >= self.start && t < self.end
    }
}

struct Stats {
    hist: Histogram,
    mint: Histogram,
    redeem: Histogram,
    errors: u64,
    warmup_errors: u64,
    by_kind: [(&'static str, u64); 4],
    mint_errors: u64,
    redeem_errors: u64,
    connects: u64,
    samples: Vec<String>,
}

impl Stats {
    fn new(pair: bool) -> Self {
        let empty = || {
            if pair {
                Histogram::new()
            } else {
                Histogram {
                    counts: Vec::new(),
                    total: 0,
                    sum_ns: 0,
                    max_ns: 0,
                }
            }
        };
        Stats {
            hist: Histogram::new(),
            mint: empty(),
            redeem: empty(),
            errors: 0,
            warmup_errors: 0,
            by_kind: [
                ("status", 0),
                ("invalid", 0),
                ("transport", 0),
                ("timeout", 0),
            ],
            mint_errors: 0,
            redeem_errors: 0,
            connects: 0,
            samples: Vec::new(),
        }
    }

    fn fail(&mut self, t: &Times, at: tokio::time::Instant, what: &str, f: &Fail) {
        if at >= t.end {
            return;
        }
        if at < t.start {
            self.warmup_errors += 1;
        } else {
            self.errors += 1;
            match what {
                "mint" => self.mint_errors += 1,
                "redeem" => self.redeem_errors += 1,
                _ => {}
            }
            for k in self.by_kind.iter_mut() {
                if k.0 == f.kind() {
                    k.1 += 1;
                }
            }
        }
        if self.samples.len() < 5 {
            let phase = if at < t.start { "warm-up" } else { "measured" };
            self.samples
                .push(format!("[{phase}] {what}: {}", f.describe()));
        }
    }

    fn merge(&mut self, o: Stats) {
        self.hist.merge(&o.hist);
        if !o.mint.counts.is_empty() {
            self.mint.merge(&o.mint);
            self.redeem.merge(&o.redeem);
        }
        self.errors += o.errors;
        self.warmup_errors += o.warmup_errors;
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind.iter()) {
            a.1 += b.1;
        }
        self.mint_errors += o.mint_errors;
        self.redeem_errors += o.redeem_errors;
        self.connects += o.connects;
        for s in o.samples {
            if self.samples.len() < 8 {
                self.samples.push(s);
            }
        }
    }
}

/// Deadline for one request starting now: per-request timeout, capped at the end of the run.
fn deadline(ctx: &Ctx, t: &Times) -> (tokio::time::Instant, bool) {
    let d = tokio::time::Instant::now() + ctx.req_timeout;
    if d >= t.end {
        (t.end, true)
    } else {
        (d, false)
    }
}

async fn worker(ctx: Arc<Ctx>, t: Times) -> Stats {
    let pair = ctx.scenario == Scenario::CardPair;
    let mut st = Stats::new(pair);
    let mut sender: Option<Sender> = None;
    let auth_hdr = AUTHORIZATION;

    loop {
        if tokio::time::Instant::now() >= t.end {
            break;
        }
        if sender.is_none() {
            let (dl, at_end) = deadline(&ctx, &t);
            match connect(&ctx.authority, dl, at_end).await {
                Ok(s) => {
                    st.connects += 1;
                    sender = Some(s);
                }
                Err(Fail::Deadline) => break,
                Err(f) => {
                    st.fail(&t, tokio::time::Instant::now(), "connect", &f);
                    // Bounded back-off so a dead server does not spin the CPU.
                    let pause = tokio::time::Instant::now() + Duration::from_millis(50);
                    tokio::time::sleep_until(pause.min(t.end)).await;
                }
            }
            continue;
        }
        let Some(s) = sender.as_mut() else { continue };

        let t0 = tokio::time::Instant::now();
        let (dl, at_end) = deadline(&ctx, &t);
        let req = match ctx.main.build(&ctx.host, None) {
            Ok(r) => r,
            Err(f) => {
                st.fail(&t, t0, "build", &f);
                break;
            }
        };
        let r = exchange(s, req, dl, at_end).await;
        let t1 = tokio::time::Instant::now();

        let step1: Result<Option<String>, Fail> = r.and_then(|(status, body)| match ctx.scenario {
            Scenario::Healthz => expect_2xx(status, &body).map(|_| None),
            Scenario::Token => check_token_response(status, &body).map(|_| None),
            Scenario::Introspect => check_introspect_response(status, &body).map(|_| None),
            Scenario::CardPair => check_mint_response(status, &body).map(Some),
        });
        let what1 = if pair { "mint" } else { "request" };
        let card_token = match step1 {
            Ok(tok) => tok,
            Err(Fail::Deadline) => break,
            Err(f) => {
                if f.kills_connection() {
                    sender = None;
                }
                if !matches!(f, Fail::Closed) {
                    st.fail(&t, t1, what1, &f);
                }
                continue;
            }
        };

        if !pair {
            if t.in_window(t1) {
                st.hist.record(t1 - t0);
            }
            continue;
        }

        // card-pair: redeem the fresh card token on the same connection.
        let (Some(tok), Some(redeem)) = (card_token, ctx.redeem.as_ref()) else {
            break;
        };
        let bearer = match hv(&format!("Bearer {tok}")) {
            Ok(v) => v,
            Err(e) => {
                st.fail(&t, t1, "redeem", &Fail::Invalid(e));
                continue;
            }
        };
        let req = match redeem.build(&ctx.host, Some((auth_hdr.clone(), bearer))) {
            Ok(r) => r,
            Err(f) => {
                st.fail(&t, t1, "redeem", &f);
                continue;
            }
        };
        let (dl, at_end) = deadline(&ctx, &t);
        let r = exchange(s, req, dl, at_end).await;
        let t2 = tokio::time::Instant::now();
        match r.and_then(|(status, body)| check_details_response(status, &body)) {
            Ok(()) => {
                if t.in_window(t2) {
                    st.mint.record(t1 - t0);
                    st.redeem.record(t2 - t1);
                    st.hist.record(t2 - t0);
                }
            }
            Err(Fail::Deadline) => break,
            Err(f) => {
                if f.kills_connection() {
                    sender = None;
                }
                // A closed connection between mint and redeem still loses the pair.
                st.fail(&t, t2, "redeem", &f);
            }
        }
    }
    st
}

// ---------------------------------------------------------------------------
// Preflight: one sequential run of the scenario on a fresh connection, with
// diagnostics, before any load. Also fetches the token used by introspect.

async fn one(
    authority: &str,
    host: &HeaderValue,
    spec: &ReqSpec,
    extra: Option<(HeaderName, HeaderValue)>,
) -> Result<(StatusCode, Bytes), String> {
    let dl = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s = connect(authority, dl, false)
        .await
        .map_err(|f| f.describe())?;
    let req = spec.build(host, extra).map_err(|f| f.describe())?;
    exchange(&mut s, req, dl, false)
        .await
        .map_err(|f| f.describe())
}

fn token_request(cfg: &Config, basic: &HeaderValue) -> Result<ReqSpec, String> {
    ReqSpec::new(
        Method::POST,
        &format!("{}/oauth2/token", cfg.base_path),
        vec![
            (AUTHORIZATION, basic.clone()),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::from_static(b"grant_type=client_credentials"),
    )
}

async fn fetch_access_token(
    cfg: &Config,
    host: &HeaderValue,
    basic: &HeaderValue,
) -> Result<String, String> {
    let spec = token_request(cfg, basic)?;
    let (status, body) = one(&cfg.authority, host, &spec, None).await?;
    check_token_response(status, &body).map_err(|f| format!("POST /oauth2/token: {}", f.describe()))
}

fn looks_like_jwt(tok: &str) -> bool {
    tok.split('.').count() == 3 && tok.starts_with("eyJ")
}

async fn build_ctx(cfg: &Config) -> Result<Ctx, String> {
    let host = hv(&cfg.authority)?;
    let basic = match (&cfg.client_id, &cfg.client_secret) {
        (Some(id), Some(secret)) => Some(hv(&format!(
            "Basic {}",
            base64(format!("{id}:{secret}").as_bytes())
        ))?),
        _ => None,
    };
    let need_basic = || {
        basic
            .clone()
            .ok_or_else(|| "client credentials required".to_string())
    };
    let mut redeem = None;
    let main = match cfg.scenario {
        Scenario::Healthz => {
            let spec = ReqSpec::new(
                Method::GET,
                &format!("{}/healthz", cfg.base_path),
                vec![],
                Bytes::new(),
            )?;
            let (status, body) = one(&cfg.authority, &host, &spec, None).await?;
            expect_2xx(status, &body).map_err(|f| format!("GET /healthz: {}", f.describe()))?;
            spec
        }
        Scenario::Token => {
            let b = need_basic()?;
            let tok = fetch_access_token(cfg, &host, &b).await?;
            let jwt = looks_like_jwt(&tok);
            if cfg.scenario_name.ends_with("-jwt") && !jwt {
                eprintln!(
                    "WARNING: {}: access_token does not look like a JWT: {}",
                    cfg.scenario_name,
                    snippet(tok.as_bytes())
                );
            }
            if cfg.scenario_name.ends_with("-opaque") && jwt {
                eprintln!(
                    "WARNING: {}: access_token looks like a JWT, expected opaque",
                    cfg.scenario_name
                );
            }
            token_request(cfg, &b)?
        }
        Scenario::Introspect => {
            let b = need_basic()?;
            let tok = fetch_access_token(cfg, &host, &b).await?;
            let spec = ReqSpec::new(
                Method::POST,
                &format!("{}/oauth2/introspect", cfg.base_path),
                vec![
                    (AUTHORIZATION, b.clone()),
                    (
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    ),
                    (ACCEPT, HeaderValue::from_static("application/json")),
                ],
                Bytes::from(format!("token={}", form_encode(&tok))),
            )?;
            let (status, body) = one(&cfg.authority, &host, &spec, None).await?;
            check_introspect_response(status, &body)
                .map_err(|f| format!("POST /oauth2/introspect: {}", f.describe()))?;
            spec
        }
        Scenario::CardPair => {
            let b = need_basic()?;
            let card = path_segment(cfg.card_id.as_deref().unwrap_or_default());
            let mint_auth = match cfg.mint_auth {
                MintAuth::Basic => b,
                MintAuth::Bearer => hv(&format!(
                    "Bearer {}",
                    fetch_access_token(cfg, &host, &b).await?
                ))?,
            };
            let mint = ReqSpec::new(
                Method::POST,
                &format!("{}/v1/cards/{card}/tokens", cfg.base_path),
                vec![
                    (AUTHORIZATION, mint_auth),
                    (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    (ACCEPT, HeaderValue::from_static("application/json")),
                ],
                Bytes::from(cfg.mint_body.clone()),
            )?;
            let red = ReqSpec::new(
                Method::GET,
                &format!("{}/v1/cards/{card}/details", cfg.base_path),
                vec![(ACCEPT, HeaderValue::from_static("application/json"))],
                Bytes::new(),
            )?;
            let (status, body) = one(&cfg.authority, &host, &mint, None).await?;
            let tok = check_mint_response(status, &body)
                .map_err(|f| format!("POST /v1/cards/{card}/tokens: {}", f.describe()))?;
            let (status, body) = one(
                &cfg.authority,
                &host,
                &red,
                Some((AUTHORIZATION, hv(&format!("Bearer {tok}"))?)),
            )
            .await?;
            check_details_response(status, &body)
                .map_err(|f| format!("GET /v1/cards/{card}/details: {}", f.describe()))?;
            redeem = Some(red);
            mint
        }
    };
    Ok(Ctx {
        scenario: cfg.scenario,
        authority: cfg.authority.clone(),
        host,
        main,
        redeem,
        req_timeout: cfg.req_timeout,
    })
}

// ---------------------------------------------------------------------------
// Run

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run(cfg: Config) -> u8 {
    let ctx = match build_ctx(&cfg).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!(
                "!!! PREFLIGHT FAILED for scenario {} against {}: {e}",
                cfg.scenario_name, cfg.url
            );
            outln!(
                "{:<18} PREFLIGHT FAILED: {e}  <<< ERRORS",
                cfg.scenario_name
            );
            let line = json!({"scenario": cfg.scenario_name, "ok": false, "preflight_error": e});
            emit_json(&cfg, &line);
            return 3;
        }
    };

    let now = tokio::time::Instant::now();
    let t = Times {
        start: now + cfg.warmup,
        end: now + cfg.warmup + cfg.duration,
    };
    let pid = cfg.server_pid.map(|p| p.to_string());

    let mut handles = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        handles.push(tokio::spawn(worker(ctx.clone(), t)));
    }

    // Sample server and own CPU exactly at the window edges.
    tokio::time::sleep_until(t.start).await;
    let srv0 = pid.as_deref().and_then(proc_cpu_ticks);
    let me0 = proc_cpu_ticks("self");
    tokio::time::sleep_until(t.end).await;
    let srv1 = pid.as_deref().and_then(proc_cpu_ticks);
    let me1 = proc_cpu_ticks("self");
    let hwm_kb = pid.as_deref().and_then(|p| proc_status_kb(p, "VmHWM:"));
    let rss_kb = pid.as_deref().and_then(|p| proc_status_kb(p, "VmRSS:"));

    let mut total = Stats::new(ctx.scenario == Scenario::CardPair);
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut lost_workers = 0;
    for h in handles {
        match tokio::time::timeout_at(join_deadline, h).await {
            Ok(Ok(s)) => total.merge(s),
            _ => lost_workers += 1,
        }
    }

    let tck = clk_tck();
    let secs = cfg.duration.as_secs_f64();
    let n = total.hist.total;
    let rate = n as f64 / secs;
    let server_cpu_s = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck),
        _ => None,
    };
    let server_gone = pid.is_some() && srv1.is_none();
    let cpu_per_op_us = server_cpu_s.filter(|_| n > 0).map(|c| c * 1e6 / n as f64);
    let loadgen_cpu_pct = match (me0, me1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck / secs * 100.0),
        _ => None,
    };
    let pair = ctx.scenario == Scenario::CardPair;
    let ok =
        total.errors == 0 && total.warmup_errors == 0 && lost_workers == 0 && !server_gone && n > 0;

    // ---- human-readable line
    let mut line = format!(
        "{:<18} {:>4} conns {:>5.1}s  {:>10.1} {}  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
        cfg.scenario_name,
        cfg.connections,
        secs,
        rate,
        if pair { "pairs/s" } else { "req/s  " },
        total.hist.pct_ms(0.50),
        total.hist.pct_ms(0.99),
        total.errors + total.warmup_errors,
    );
    if let Some(c) = cpu_per_op_us {
        let _ = write!(
            line,
            "  server {:.1} µs CPU/{}",
            c,
            if pair { "pair" } else { "req" }
        );
    }
    if let Some(h) = hwm_kb {
        let _ = write!(line, "  peak RSS {:.1} MB", h as f64 / 1024.0);
    }
    if let Some(l) = loadgen_cpu_pct {
        let _ = write!(line, "  loadgen CPU {:.0}%", l);
    }
    if total.connects as usize > cfg.connections {
        let _ = write!(
            line,
            "  reconnects {}",
            total.connects as usize - cfg.connections
        );
    }
    if !ok {
        line.push_str("  <<< ERRORS");
    }
    outln!("{line}");
    if pair {
        outln!(
            "{:<18}   mint   p50 {:>7.3} ms  p99 {:>7.3} ms   redeem p50 {:>7.3} ms  p99 {:>7.3} ms   ({} HTTP req/s)",
            "",
            total.mint.pct_ms(0.50),
            total.mint.pct_ms(0.99),
            total.redeem.pct_ms(0.50),
            total.redeem.pct_ms(0.99),
            r1(rate * 2.0)
        );
    }

    // ---- loud error report
    if !ok {
        let mut e = String::new();
        let _ = writeln!(
            e,
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        let _ = writeln!(
            e,
            "!!! SCENARIO {} HAD ERRORS: {} in the measured window, {} during warm-up",
            cfg.scenario_name, total.errors, total.warmup_errors
        );
        let kinds: Vec<String> = total
            .by_kind
            .iter()
            .filter(|k| k.1 > 0)
            .map(|k| format!("{}={}", k.0, k.1))
            .collect();
        if !kinds.is_empty() {
            let _ = writeln!(e, "!!! by kind: {}", kinds.join(" "));
        }
        if server_gone {
            let _ = writeln!(
                e,
                "!!! server process {} is gone",
                pid.as_deref().unwrap_or("?")
            );
        }
        if lost_workers > 0 {
            let _ = writeln!(e, "!!! {lost_workers} workers did not finish");
        }
        if n == 0 {
            let _ = writeln!(e, "!!! no successful request in the measured window");
        }
        for s in &total.samples {
            let _ = writeln!(e, "!!!   {s}");
        }
        let _ = write!(
            e,
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        eprintln!("{e}");
    }
    if total.connects as usize > cfg.connections {
        eprintln!(
            "WARNING: {}: {} TCP connections opened for {} workers — keep-alive not honoured or connections dropped",
            cfg.scenario_name, total.connects, cfg.connections
        );
    }

    // ---- JSON line
    let mut j = json!({
        "scenario": cfg.scenario_name,
        "ok": ok,
        "unit": if pair { "pair" } else { "request" },
        "url": cfg.url,
        "connections": cfg.connections,
        "loadgen_threads": cfg.threads,
        "duration_s": secs,
        "warmup_s": cfg.warmup.as_secs_f64(),
        "requests": n,
        "http_requests": if pair { n * 2 } else { n },
        "rps": r1(rate),
        "p50_ms": r3(total.hist.pct_ms(0.50)),
        "p90_ms": r3(total.hist.pct_ms(0.90)),
        "p99_ms": r3(total.hist.pct_ms(0.99)),
        "p999_ms": r3(total.hist.pct_ms(0.999)),
        "max_ms": r3(total.hist.max_ms()),
        "mean_ms": r3(total.hist.mean_ms()),
        "errors": total.errors,
        "warmup_errors": total.warmup_errors,
        "errors_by_kind": total.by_kind.iter().map(|k| (k.0.to_string(), json!(k.1))).collect::<serde_json::Map<_, _>>(),
        "error_samples": total.samples,
        "connects": total.connects,
        "keepalive_ok": total.connects as usize <= cfg.connections,
        "server_pid": cfg.server_pid,
        "server_cpu_s": server_cpu_s.map(r3),
        "server_cpu_us_per_req": cpu_per_op_us.map(r1),
        "server_peak_rss_mb": hwm_kb.map(|k| r1(k as f64 / 1024.0)),
        "server_rss_mb": rss_kb.map(|k| r1(k as f64 / 1024.0)),
        "loadgen_cpu_pct": loadgen_cpu_pct.map(r1),
        "clk_tck": tck,
    });
    if pair {
        if let Some(o) = j.as_object_mut() {
            o.insert("pairs_per_s".into(), json!(r1(rate)));
            o.insert("mint_p50_ms".into(), json!(r3(total.mint.pct_ms(0.50))));
            o.insert("mint_p99_ms".into(), json!(r3(total.mint.pct_ms(0.99))));
            o.insert("redeem_p50_ms".into(), json!(r3(total.redeem.pct_ms(0.50))));
            o.insert("redeem_p99_ms".into(), json!(r3(total.redeem.pct_ms(0.99))));
            o.insert("mint_errors".into(), json!(total.mint_errors));
            o.insert("redeem_errors".into(), json!(total.redeem_errors));
            o.insert(
                "server_cpu_us_per_http_req".into(),
                json!(cpu_per_op_us.map(|c| r1(c / 2.0))),
            );
        }
    }
    emit_json(&cfg, &j);

    if ok {
        0
    } else {
        2
    }
}

fn emit_json(cfg: &Config, v: &Value) {
    let s = v.to_string();
    if let Some(path) = &cfg.json_out {
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{s}"));
        if let Err(e) = r {
            eprintln!("cannot append to {path}: {e}");
        }
    }
    outln!("{s}");
}

// ---------------------------------------------------------------------------
// summarize: table with ratios to the healthz req/s of the same run.

fn summarize(path: &str) -> u8 {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return 1;
        }
    };
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let opt = |x: Option<f64>, prec: usize| {
        x.map(|v| format!("{v:.prec$}"))
            .unwrap_or_else(|| "-".into())
    };

    outln!(
        "{:<18} {:>11} {:>9} {:>12} {:>9} {:>9} {:>7} {:>11} {:>9} {:>10}",
        "scenario",
        "rps|pairs/s",
        "x healthz",
        "healthz/op",
        "p50_ms",
        "p99_ms",
        "errors",
        "srv_cpu_us",
        "x cpu",
        "peak_rss_mb"
    );
    let mut any_err = false;
    // Each figure is relative to the healthz run just before it (the machine's speed drifts
    // over a run); per scenario: (ratio, cost, p99, cpu ratio) of every repetition.
    let mut healthz: Option<&Value> = None;
    let mut seen_healthz = false;
    let mut per: Vec<(String, Vec<[Option<f64>; 4]>)> = Vec::new();
    for r in &rows {
        let name = s(r, "scenario");
        if r.get("ok") == Some(&Value::Bool(false)) {
            any_err = true;
        }
        if r.get("preflight_error").is_some() {
            outln!("{:<18} PREFLIGHT FAILED: {}", name, s(r, "preflight_error"));
            continue;
        }
        if name == "healthz" {
            healthz = Some(r);
            seen_healthz = true;
        }
        let h_rps = healthz.and_then(|h| f(h, "rps")).filter(|x| *x > 0.0);
        let h_cpu = healthz
            .and_then(|h| f(h, "server_cpu_us_per_req"))
            .filter(|x| *x > 0.0);
        let rps = f(r, "rps");
        let ratio = match (rps, h_rps) {
            (Some(a), Some(h)) => Some(a / h),
            _ => None,
        };
        let cost = match (rps, h_rps) {
            (Some(a), Some(h)) if a > 0.0 => Some(h / a),
            _ => None,
        };
        let cpu = f(r, "server_cpu_us_per_req");
        let cpu_x = match (cpu, h_cpu) {
            (Some(a), Some(h)) => Some(a / h),
            _ => None,
        };
        if name != "healthz" {
            let entry = [ratio, cost, f(r, "p99_ms"), cpu_x];
            match per.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(entry),
                None => per.push((name.clone(), vec![entry])),
            }
        }
        let errors = f(r, "errors").unwrap_or(0.0) + f(r, "warmup_errors").unwrap_or(0.0);
        outln!(
            "{:<18} {:>11} {:>9} {:>12} {:>9} {:>9} {:>7} {:>11} {:>9} {:>10}{}",
            name,
            opt(rps, 1),
            opt(ratio, 3),
            opt(cost, 2),
            opt(f(r, "p50_ms"), 3),
            opt(f(r, "p99_ms"), 3),
            errors as u64,
            opt(cpu, 1),
            opt(cpu_x, 2),
            opt(f(r, "server_peak_rss_mb"), 1),
            if r.get("ok") == Some(&Value::Bool(false)) {
                "  <<< ERRORS"
            } else {
                ""
            }
        );
        if s(r, "unit") == "pair" {
            outln!(
                "{:<18} {:>11} {:>9} {:>12} {:>9} {:>9}",
                "  mint",
                "",
                "",
                "",
                opt(f(r, "mint_p50_ms"), 3),
                opt(f(r, "mint_p99_ms"), 3)
            );
            outln!(
                "{:<18} {:>11} {:>9} {:>12} {:>9} {:>9}",
                "  redeem",
                "",
                "",
                "",
                opt(f(r, "redeem_p50_ms"), 3),
                opt(f(r, "redeem_p99_ms"), 3)
            );
            if let Some(c) = cost {
                outln!(
                    "{:<18} cost of one mint+redeem pair = {:.2} healthz requests",
                    "",
                    c
                );
            }
        }
    }
    if per.iter().any(|(_, v)| v.len() > 1) {
        let median = |v: &[[Option<f64>; 4]], i: usize| {
            let mut xs: Vec<f64> = v.iter().filter_map(|e| e[i]).collect();
            xs.sort_by(|a, b| a.total_cmp(b));
            xs.get(xs.len() / 2).copied()
        };
        outln!("");
        outln!("medians over the repetitions (each against its adjacent healthz):");
        outln!(
            "{:<18} {:>5} {:>9} {:>12} {:>9} {:>9}",
            "scenario",
            "runs",
            "x healthz",
            "healthz/op",
            "p99_ms",
            "x cpu"
        );
        for (name, v) in &per {
            outln!(
                "{:<18} {:>5} {:>9} {:>12} {:>9} {:>9}",
                name,
                v.len(),
                opt(median(v, 0), 3),
                opt(median(v, 1), 2),
                opt(median(v, 2), 3),
                opt(median(v, 3), 2)
            );
        }
    }
    if !seen_healthz {
        outln!("(no healthz result: ratios unavailable)");
    }
    outln!("x healthz = rps / the healthz rps measured just before;  healthz/op = healthz rps / rps (cost in healthz requests per request or pair);");
    outln!("srv_cpu_us = server CPU µs per request (per pair for card-pair);  x cpu = srv_cpu_us / healthz srv_cpu_us");
    if any_err {
        outln!("!!! SOME SCENARIOS HAD ERRORS — their figures are not trustworthy");
        2
    } else {
        0
    }
}

// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("summarize") {
        return match args.get(1) {
            Some(p) => ExitCode::from(summarize(p)),
            None => {
                eprintln!("usage: loadgen summarize RESULTS.jsonl");
                ExitCode::from(1)
            }
        };
    }
    let cfg = match parse_args(args) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            let _ = write!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };

    // Hard watchdog: whatever happens, the generator exits on its own.
    let budget = cfg.warmup + cfg.duration + Duration::from_secs(60);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("!!! loadgen watchdog: still running after {budget:?}, exiting");
        std::process::exit(4);
    });

    let rt = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run(cfg));
    rt.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn histogram_precision() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.pct_ms(0.5);
        let p99 = h.pct_ms(0.99);
        assert!((p50 - 5.0).abs() / 5.0 < 0.01, "{p50}");
        assert!((p99 - 9.9).abs() / 9.9 < 0.01, "{p99}");
        for v in [0u64, 1, 127, 128, 129, 1_000_000, u64::MAX / 2, u64::MAX] {
            let i = Histogram::index(v);
            assert!(i < NBUCKETS);
            let back = Histogram::value_of(i);
            if v > 0 {
                assert!(
                    (back as f64 - v as f64).abs() / (v as f64) < 0.016,
                    "{v} -> {back}"
                );
            }
        }
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a.b-c_d"), "a.b-c_d");
        assert_eq!(form_encode("a+b/c="), "a%2Bb%2Fc%3D");
    }
}
