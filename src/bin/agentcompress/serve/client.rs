//! A small HTTP/1.1 client on `std` alone, for `bench serve` and the server's tests (which
//! include this file): one request per connection, bodies with Content-Length or chunked,
//! server-sent events read as they arrive.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a read may block before the client gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// A response whose head has been read; the body is read on demand.
pub struct Stream {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    body: BufReader<Body>,
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// Sends `method path` with a JSON `body` to `addr` (`host:port`) and reads the response head.
pub fn open(addr: &str, method: &str, path: &str, body: Option<&str>) -> io::Result<Stream> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_nodelay(true)?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the response head".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let kind = if find(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Kind::Chunked {
            left: 0,
            done: false,
        }
    } else if let Some(n) = find(&headers, "content-length").and_then(|v| v.parse().ok()) {
        Kind::Length(n)
    } else {
        Kind::ToEof
    };
    Ok(Stream {
        status,
        headers,
        body: BufReader::new(Body { inner: r, kind }),
    })
}

/// Sends a request and reads the whole response.
pub fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
    let s = open(addr, method, path, body)?;
    let (status, headers) = (s.status, s.headers.clone());
    Ok(Response {
        status,
        headers,
        body: s.read_body()?,
    })
}

impl Stream {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The payload of the next server-sent `data:` line; `None` at the end of the body.
    pub fn next_event(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.body.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if let Some(d) = line.trim_end().strip_prefix("data:") {
                return Ok(Some(d.trim_start().to_string()));
            }
        }
    }

    /// The rest of the body as text.
    pub fn read_body(mut self) -> io::Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

enum Kind {
    Chunked { left: usize, done: bool },
    Length(usize),
    ToEof,
}

/// A response body, decoded from its transfer encoding.
struct Body {
    inner: BufReader<TcpStream>,
    kind: Kind,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.kind {
            Kind::ToEof => self.inner.read(buf),
            Kind::Length(left) => {
                let n = buf.len().min(*left);
                let got = self.inner.read(&mut buf[..n])?;
                *left -= got;
                Ok(got)
            }
            Kind::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let mut size = String::new();
                    self.inner.read_line(&mut size)?;
                    let hex = size.trim().split(';').next().unwrap_or("");
                    *left = usize::from_str_radix(hex, 16)
                        .map_err(|_| bad(format!("bad chunk size {size:?}")))?;
                    if *left == 0 {
                        *done = true;
                        return Ok(0);
                    }
                }
                let n = buf.len().min(*left);
                let got = self.inner.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(bad("connection closed inside a chunk".into()));
                }
                *left -= got;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    self.inner.read_exact(&mut crlf)?;
                }
                Ok(got)
            }
        }
    }
}
