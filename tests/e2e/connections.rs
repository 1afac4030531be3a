//! HTTP/2 and connection hardening (issue 13, `[connections]`): half-open
//! connections, a stream flood on one connection and oversized metadata are
//! refused while a well-behaved client keeps publishing, and the server's
//! memory stays flat. The server runs as a child process so its RSS is its
//! own.

use std::net::SocketAddr;

use eventbus_tests::tls::{tls_endpoint, Ca, TlsFiles};
use eventbus_tests::v1::event_service_client::EventServiceClient;
use eventbus_tests::{temp_dir, ChildServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::support::{event, publish, recv_n, subscribe, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_eventbus-under-test");

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A well-behaved client: a new connection, 20 events published.
async fn publishes(channel: Channel, topic: &str) {
    let mut events = EventServiceClient::new(channel);
    let batch = (0..20).map(|i| event("k", "t", format!("e{i}"))).collect();
    let results = tokio::time::timeout(PATIENCE, publish(&mut events, topic, batch))
        .await
        .expect("publish in time");
    assert_eq!(results.len(), 20);
}

/// 2,000 connections that never finish their handshake: a third send
/// nothing, a third half an HTTP/2 preface, a third the start of a TLS
/// ClientHello. Returns them, still open.
async fn half_open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        match i % 3 {
            0 => {}
            1 => s.write_all(b"PRI * HTTP/2.0\r\n").await.expect("send"),
            // A handshake record announcing 512 bytes, of which 6 come.
            _ => s
                .write_all(&[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ])
                .await
                .expect("send"),
        }
        conns.push(s);
    }
    conns
}

/// Waits until the server has closed every one of `conns`.
async fn closed_by_server(conns: Vec<TcpStream>) -> usize {
    let mut closed = 0;
    for mut s in conns {
        let mut buf = [0u8; 256];
        // EOF or a reset: the server dropped it. Anything it sent first
        // (a TLS alert) is read and skipped.
        let done = tokio::time::timeout(PATIENCE, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        if done.is_ok() {
            closed += 1;
        }
    }
    closed
}

async fn half_open_flood(tls: bool) {
    let (_dir, data) = temp_dir();
    let ca = Ca::new("flood-ca");
    let files = TlsFiles::write(&ca.server_cert(), None);
    let mut env = vec![("EVENTBUS_CONNECTIONS__HANDSHAKE_TIMEOUT", "2s".to_string())];
    if tls {
        env.extend(files.env(false));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ChildServer::start_with_env(BIN, &data, &[], &env).await;
    let channel = || -> Channel {
        if tls {
            tls_endpoint(server.addr, &ca, None).connect_lazy()
        } else {
            Channel::from_shared(format!("http://{}", server.addr))
                .unwrap()
                .connect_lazy()
        }
    };
    publishes(channel(), "warmup").await;
    let before = rss_kib(server.pid());

    let conns = half_open(server.addr, 2000).await;
    // A new, well-behaved client is served while all 2,000 are open.
    publishes(channel(), "during").await;
    let during = rss_kib(server.pid());

    // The handshake timeout (2 s here) drops every one of them.
    let closed = closed_by_server(conns).await;
    assert_eq!(closed, 2000, "half-open connections the server closed");
    publishes(channel(), "after").await;
    let after = rss_kib(server.pid());
    println!(
        "half-open flood (tls={tls}): server VmRSS {before} KiB before, {during} KiB with 2000 \
         half-open connections, {after} KiB after they were dropped"
    );
    // Generous: a pending handshake costs a few KiB; 2,000 of them well
    // under 64 MiB, and dropping them gives most of it back.
    assert!(during < before + 64 * 1024, "{before} -> {during} KiB");
    assert!(after < before + 64 * 1024, "{before} -> {after} KiB");
    server.terminate().await;
}

#[tokio::test]
async fn half_open_connections_do_not_stop_a_well_behaved_client() {
    half_open_flood(false).await;
}

#[tokio::test]
async fn half_open_tls_connections_do_not_stop_a_well_behaved_client() {
    half_open_flood(true).await;
}

/// At the connection cap new connections wait in the backlog (not
/// refused) until a slot frees: here when the half-open ones time out.
#[tokio::test]
async fn at_the_connection_cap_new_clients_wait_for_a_slot() {
    let (_dir, data) = temp_dir();
    let env = [
        ("EVENTBUS_CONNECTIONS__MAX_CONNECTIONS", "50"),
        ("EVENTBUS_CONNECTIONS__HANDSHAKE_TIMEOUT", "1s"),
    ];
    let server = ChildServer::start_with_env(BIN, &data, &[], &env).await;
    let conns = half_open(server.addr, 200).await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(PATIENCE)
        .connect_lazy();
    publishes(channel, "capped").await;
    assert_eq!(closed_by_server(conns).await, 200);
    server.terminate().await;
}

#[tokio::test]
async fn a_stream_flood_beyond_max_concurrent_streams_is_refused() {
    let (_dir, data) = temp_dir();
    let env = [("EVENTBUS_CONNECTIONS__MAX_CONCURRENT_STREAMS", "8")];
    let server = ChildServer::start_with_env(BIN, &data, &[], &env).await;
    let before = rss_kib(server.pid());

    let mut h2 = raw_h2::Conn::open(server.addr).await;
    let settings = h2.server_settings().await;
    assert_eq!(settings.get(&raw_h2::MAX_CONCURRENT_STREAMS), Some(&8));
    assert_eq!(settings.get(&raw_h2::MAX_HEADER_LIST_SIZE), Some(&16384));
    // 40 Publish calls whose request body never comes: they stay open.
    let ids: Vec<u32> = (0..40).map(|i| 1 + 2 * i).collect();
    for &id in &ids {
        h2.headers(id, &raw_h2::grpc_request("Publish", &[]), false)
            .await;
    }
    let frames = h2.frames_until_quiet().await;
    let refused: Vec<u32> = frames
        .iter()
        .filter(|f| f.kind == raw_h2::RST_STREAM && f.error_code() == raw_h2::REFUSED_STREAM)
        .map(|f| f.stream)
        .collect();
    println!(
        "stream flood: {} of 40 streams refused (RST_STREAM REFUSED_STREAM); frames: {:?}",
        refused.len(),
        frames
            .iter()
            .map(|f| (f.kind, f.stream))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        refused,
        ids[8..].to_vec(),
        "the streams beyond the 8 allowed"
    );
    assert!(
        !frames.iter().any(|f| f.kind == raw_h2::GOAWAY),
        "the connection itself stays up"
    );

    // The server keeps serving others meanwhile.
    publishes(server.channel().await, "others").await;
    let after = rss_kib(server.pid());
    println!("stream flood: server VmRSS {before} KiB before, {after} KiB after");
    assert!(after < before + 64 * 1024, "{before} -> {after} KiB");
    drop(h2);
    server.terminate().await;
}

#[tokio::test]
async fn oversized_metadata_is_refused() {
    let (_dir, data) = temp_dir();
    let server = ChildServer::start(BIN, &data, &[]).await;
    let big = "a".repeat(20_000);

    // Raw HTTP/2, so no client-side check gets in the way.
    let mut h2 = raw_h2::Conn::open(server.addr).await;
    h2.server_settings().await;
    h2.headers(
        1,
        &raw_h2::grpc_request("Publish", &[("x-big", &big)]),
        true,
    )
    .await;
    let frames = h2.frames_until_quiet().await;
    println!(
        "oversized metadata, raw: frames {:?}",
        frames
            .iter()
            .map(|f| (f.kind, f.flags, f.stream, f.payload.len()))
            .collect::<Vec<_>>()
    );
    // h2 answers the stream at once with a response head (HTTP 431) that
    // ends it: HEADERS with END_STREAM, no body, no trailers.
    let on_stream: Vec<_> = frames.iter().filter(|f| f.stream == 1).collect();
    assert_eq!(on_stream.len(), 1, "one frame on the stream");
    assert_eq!(on_stream[0].kind, raw_h2::HEADERS);
    assert_eq!(on_stream[0].flags & raw_h2::END_STREAM, raw_h2::END_STREAM);
    assert!(!frames.iter().any(|f| f.kind == raw_h2::GOAWAY));

    // A tonic client sending the same metadata gets that 431 as a status.
    let mut events = EventServiceClient::new(server.channel().await);
    let mut req = tonic::Request::new(eventbus_tests::v1::PublishRequest {
        topic: "big-meta".into(),
        events: vec![event("k", "t", "x")],
    });
    req.metadata_mut().insert("x-big", big.parse().unwrap());
    let err = events.publish(req).await.expect_err("oversized metadata");
    println!("oversized metadata, tonic client: {err:?}");
    assert_eq!(err.code(), tonic::Code::Unknown, "{err:?}");
    assert!(err.message().contains("HTTP status code 431"), "{err:?}");

    // Nothing was published, and normal calls go on.
    publishes(server.channel().await, "normal").await;
    let topics =
        eventbus_tests::v1::admin_service_client::AdminServiceClient::new(server.channel().await)
            .list_topics(eventbus_tests::v1::ListTopicsRequest::default())
            .await
            .expect("list topics")
            .into_inner()
            .topics;
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["normal"]);
    server.terminate().await;
}

/// Just enough HTTP/2 framing (RFC 9113) and HPACK literals (RFC 7541) to
/// do what well-behaved clients never do: exceed the server's advertised
/// limits.
mod raw_h2 {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const HEADERS: u8 = 0x1;
    pub const END_STREAM: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    const CONTINUATION: u8 = 0x9;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    const MAX_FRAME: usize = 16_384;

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM.
        pub fn error_code(&self) -> u32 {
            u32::from_be_bytes(self.payload[..4].try_into().unwrap())
        }
    }

    pub struct Conn {
        tcp: TcpStream,
    }

    /// The headers of a gRPC call to EventService/`method`.
    pub fn grpc_request<'a>(method: &str, extra: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", &format!("/eventbus.v1.EventService/{method}")),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    }

    impl Conn {
        pub async fn open(addr: SocketAddr) -> Conn {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            let mut conn = Conn { tcp };
            conn.send(SETTINGS, 0, 0, &[]).await;
            conn
        }

        async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
            let len = payload.len() as u32;
            let mut frame = len.to_be_bytes()[1..].to_vec();
            frame.extend([kind, flags]);
            frame.extend(stream.to_be_bytes());
            frame.extend(payload);
            self.tcp.write_all(&frame).await.expect("send frame");
        }

        /// HEADERS (plus CONTINUATIONs) opening `stream`.
        pub async fn headers(&mut self, stream: u32, headers: &[(String, String)], end: bool) {
            let mut block = Vec::new();
            for (name, value) in headers {
                // Literal header field without indexing, new name.
                block.push(0x00);
                string(&mut block, name.as_bytes());
                string(&mut block, value.as_bytes());
            }
            let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                let mut flags = if last { END_HEADERS } else { 0 };
                let kind = if i == 0 { HEADERS } else { CONTINUATION };
                if i == 0 && end {
                    flags |= END_STREAM;
                }
                self.send(kind, flags, stream, chunk).await;
            }
        }

        async fn read_frame(&mut self) -> Option<Frame> {
            let mut head = [0u8; 9];
            self.tcp.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            self.tcp.read_exact(&mut payload).await.ok()?;
            let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let frame = Frame {
                kind: head[3],
                flags: head[4],
                stream,
                payload,
            };
            // Be a polite peer: acknowledge settings and pings.
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                self.send(SETTINGS, ACK, 0, &[]).await;
            }
            if frame.kind == PING && frame.flags & ACK == 0 {
                let data = frame.payload.clone();
                self.send(PING, ACK, 0, &data).await;
            }
            Some(frame)
        }

        /// The server's first SETTINGS, as id -> value.
        pub async fn server_settings(&mut self) -> HashMap<u16, u32> {
            loop {
                let f = tokio::time::timeout(Duration::from_secs(20), self.read_frame())
                    .await
                    .expect("server SETTINGS in time")
                    .expect("connection open");
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    return f
                        .payload
                        .chunks(6)
                        .map(|c| {
                            (
                                u16::from_be_bytes([c[0], c[1]]),
                                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                            )
                        })
                        .collect();
                }
            }
        }

        /// Every frame until the server has been silent for a second (or
        /// closed the connection); connection-level noise (SETTINGS ACK,
        /// PING, WINDOW_UPDATE on stream 0) included.
        pub async fn frames_until_quiet(&mut self) -> Vec<Frame> {
            let mut out = Vec::new();
            while let Ok(Some(f)) =
                tokio::time::timeout(Duration::from_secs(1), self.read_frame()).await
            {
                out.push(f);
            }
            out
        }
    }

    /// An HPACK string literal, not Huffman-coded.
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        integer(out, 7, s.len());
        out.extend(s);
    }

    /// An HPACK integer with an `n`-bit prefix (the byte's other bits 0).
    fn integer(out: &mut Vec<u8>, n: u32, mut v: usize) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(v as u8);
            return;
        }
        out.push(max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128 + 128) as u8);
            v /= 128;
        }
        out.push(v as u8);
    }
}

/// Load shedding with a per-connection limit of one call at a time: calls
/// over it fail at once with RESOURCE_EXHAUSTED, while Subscribe streams
/// (which leave the limit once their response starts) keep flowing.
#[tokio::test]
async fn load_shedding_refuses_excess_calls_but_not_open_streams() {
    let server = eventbus_tests::TestServer::start_with(eventbus_tests::DataDir::Fresh, |c| {
        c.connections.max_concurrent_requests_per_connection = 1;
    })
    .await;
    let channel = server.channel();

    // Five Subscribe streams open at once on the one connection.
    let mut streams = Vec::new();
    for i in 0..5 {
        let mut events = EventServiceClient::new(channel.clone());
        streams.push(subscribe(&mut events, "shed", &format!("s{i}"), 10).await);
    }

    // 50 publishes at once on the same connection: all but the call being
    // handled are shed, at once, with RESOURCE_EXHAUSTED.
    let calls = (0..50).map(|i| {
        let mut events = EventServiceClient::new(channel.clone());
        async move {
            events
                .publish(eventbus_tests::v1::PublishRequest {
                    topic: "shed".into(),
                    events: vec![event("k", "t", format!("e{i}"))],
                })
                .await
        }
    });
    let results = futures_join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "load shedding: {ok} of 50 concurrent publishes ran, {} shed",
        shed.len()
    );
    assert!(ok >= 1, "at least the first call runs");
    assert!(
        !shed.is_empty(),
        "concurrent calls beyond the limit of 1 are shed"
    );
    for err in &shed {
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    }

    // Every stream still gets every published event.
    for stream in &mut streams {
        let got = recv_n(stream, ok).await;
        assert_eq!(got.len(), ok);
    }
    // One call at a time is never shed.
    publishes(channel, "shed-sequential").await;
}

/// `join_all` without the futures crate: spawn each call, await them in order.
async fn futures_join_all<F>(calls: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("call task"));
    }
    out
}
