//! What one message between two nodes costs: Keel's peer transport (batches on a long-lived
//! `RaftPeer.Stream` gRPC call, `transport::PeerSender` to `transport::PeerService`) against a
//! bare length-prefixed TCP connection carrying the same encoded batches, in one process over
//! loopback.
//!
//! Node A sends to node B, and B's echo task answers every batch it receives with one message
//! back to A, through the same kind of link. Two loads for each link:
//! * **round trip**: one heartbeat out, its answer back, then the next (the path of a write at
//!   one client: the leader's AppendEntries and the follower's acknowledgement);
//! * **pipelined**: 64 AppendEntries of one 256-byte entry in flight (the path at 64 clients).
//!
//! It prints the round-trip latency (p50, p99) and the process CPU time per message sent. The
//! bare TCP link is a yardstick, not a transport: it has no reconnection, acknowledgements or
//! limits. Run: `cargo bench -p keel-runtime --bench peer_transport`; `ROUND_TRIPS` (20000) sets
//! the round trips (four times as many entries are pipelined), `WORKERS` (2) the tokio workers.

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() {
    let round_trips: usize = std::env::var("ROUND_TRIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let workers: usize = std::env::var("WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench::run(round_trips));
}

#[cfg(not(madsim))]
mod bench {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::{Buf, BufMut, BytesMut};
    use keel::proto::raft::RaftMessageBatch;
    use keel_core::{Entry, EntryPayload, LogId, Message, MessageBody, NodeId};
    use keel_runtime::transport::{convert, peer_service, PeerSender, TransportConfig, TransportStats};
    use prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::Server;

    /// Messages in flight in the pipelined load.
    const WINDOW: usize = 64;
    /// Entry payload of the pipelined load.
    const ENTRY_BYTES: usize = 256;
    /// Largest frame the bare TCP link accepts.
    const FRAME_BYTES_MAX: usize = 16 << 20;
    /// Longest wait for an answer from B.
    const ANSWER_WAIT: Duration = Duration::from_secs(10);

    /// One direction of a link: queue a message for the peer.
    trait Outbox: Send + 'static {
        fn send(&self, message: Message);
    }

    impl Outbox for PeerSender {
        fn send(&self, message: Message) {
            PeerSender::send(self, message);
        }
    }

    impl Outbox for mpsc::Sender<Message> {
        fn send(&self, message: Message) {
            // The bench never has more in flight than the queue holds.
            let _ = self.try_send(message);
        }
    }

    /// A's side of a link between A (id 1) and B (id 2), B's echo running: A's outbox to B, and
    /// the batches B answers with.
    struct Link {
        to_b: Box<dyn Outbox>,
        at_a: mpsc::Receiver<Vec<Message>>,
    }

    impl Link {
        /// Starts B's echo (B receives on `at_b` and answers through `to_a`).
        fn new(
            to_b: impl Outbox,
            to_a: impl Outbox,
            at_a: mpsc::Receiver<Vec<Message>>,
            at_b: mpsc::Receiver<Vec<Message>>,
        ) -> Self {
            spawn_echo(at_b, Box::new(to_a));
            Self { to_b: Box::new(to_b), at_a }
        }
    }

    fn heartbeat(from: NodeId, to: NodeId, read_round: u64) -> Message {
        Message { from, to, term: 1, body: MessageBody::Heartbeat { commit: 0, read_round } }
    }

    fn append(from: NodeId, to: NodeId, index: u64) -> Message {
        let payload = EntryPayload::Command(vec![7; ENTRY_BYTES].into());
        let entry = Entry { log_id: LogId::new(1, index), payload };
        let prev_log_id = LogId::new(1, index - 1);
        let body =
            MessageBody::AppendEntries { prev_log_id, entries: vec![entry], leader_commit: 0, commit_notice: false };
        Message { from, to, term: 1, body }
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Keel's transport: a `PeerService` served for each node and a `PeerSender` to each.
    async fn grpc_link() -> Link {
        let mut addresses = Vec::new();
        let mut inbound = Vec::new();
        for id in [1, 2] {
            let incoming = TcpIncoming::bind(loopback()).expect("bind a loopback port");
            addresses.push(incoming.local_addr().expect("bound address").to_string());
            let (sender, receiver) = mpsc::channel(1024);
            inbound.push(receiver);
            tokio::spawn(Server::builder().add_service(peer_service(id, sender)).serve_with_incoming(incoming));
        }
        let stats = Arc::new(TransportStats::default());
        let config = TransportConfig::default();
        let to_b = PeerSender::spawn(1, 2, addresses[1].clone(), &config, Arc::clone(&stats));
        let to_a = PeerSender::spawn(2, 1, addresses[0].clone(), &config, stats);
        let at_b = inbound.pop().expect("B's queue");
        let at_a = inbound.pop().expect("A's queue");
        Link::new(to_b, to_a, at_a, at_b)
    }

    /// The yardstick: each direction one TCP connection carrying `[u32 length][RaftMessageBatch]`
    /// frames; a writer task batches what is queued, a reader task decodes and delivers.
    async fn tcp_link() -> Link {
        let (to_b, at_b) = tcp_direction().await;
        let (to_a, at_a) = tcp_direction().await;
        Link::new(to_b, to_a, at_a, at_b)
    }

    async fn tcp_direction() -> (mpsc::Sender<Message>, mpsc::Receiver<Vec<Message>>) {
        let listener = TcpListener::bind(loopback()).await.expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address");
        let client = TcpStream::connect(address).await.expect("connect over loopback");
        let (server, _) = listener.accept().await.expect("accept");
        client.set_nodelay(true).expect("nodelay");
        server.set_nodelay(true).expect("nodelay");
        let (outbox, queue) = mpsc::channel(1024);
        let (deliver, inbound) = mpsc::channel(1024);
        tokio::spawn(tcp_writer(client, queue));
        tokio::spawn(tcp_reader(server, deliver));
        (outbox, inbound)
    }

    async fn tcp_writer(mut stream: TcpStream, mut queue: mpsc::Receiver<Message>) {
        let mut buffer = BytesMut::new();
        let mut batch = Vec::new();
        while queue.recv_many(&mut batch, WINDOW).await > 0 {
            let wire = RaftMessageBatch { messages: batch.drain(..).map(|m| convert::message_to_wire(&m)).collect() };
            buffer.put_u32(wire.encoded_len() as u32);
            wire.encode(&mut buffer).expect("a BytesMut grows");
            if stream.write_all_buf(&mut buffer).await.is_err() {
                return;
            }
        }
    }

    async fn tcp_reader(mut stream: TcpStream, deliver: mpsc::Sender<Vec<Message>>) {
        let mut buffer = BytesMut::with_capacity(64 << 10);
        loop {
            while buffer.len() >= 4 {
                let length = u32::from_be_bytes(buffer[..4].try_into().expect("four bytes")) as usize;
                if length > FRAME_BYTES_MAX {
                    return;
                }
                if buffer.len() < 4 + length {
                    break;
                }
                buffer.advance(4);
                let frame = buffer.split_to(length);
                // A frame that does not decode ends the link, as an oversized one does: the
                // waiting side then reports the missing answer.
                let Ok(wire) = RaftMessageBatch::decode(frame) else { return };
                let Ok(batch) = wire.messages.into_iter().map(convert::message_from_wire).collect() else { return };
                if deliver.send(batch).await.is_err() {
                    return;
                }
            }
            match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The sequence number a message carries: a heartbeat's read round, an append's last index.
    fn sequence(message: &Message) -> u64 {
        match &message.body {
            MessageBody::Heartbeat { read_round, .. } => *read_round,
            MessageBody::AppendEntries { entries, .. } => entries.last().map_or(0, |e| e.log_id.index),
            _ => 0,
        }
    }

    /// B's echo: every batch received is answered with one heartbeat back to A, carrying the
    /// highest sequence number in the batch.
    fn spawn_echo(mut at_b: mpsc::Receiver<Vec<Message>>, to_a: Box<dyn Outbox>) {
        tokio::spawn(async move {
            while let Some(batch) = at_b.recv().await {
                let highest = batch.iter().map(sequence).max().unwrap_or(0);
                to_a.send(heartbeat(2, 1, highest));
            }
        });
    }

    /// User and system CPU time of this process (`/proc/self/stat` counts in 10 ms ticks, the
    /// fixed `USER_HZ` of Linux).
    fn cpu_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or_default().split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        Duration::from_millis(ticks * 10)
    }

    /// The highest sequence number B has confirmed, waiting for its next answer (a lost message
    /// would leave the bench waiting: it stops after [`ANSWER_WAIT`] instead).
    async fn confirmed(at_a: &mut mpsc::Receiver<Vec<Message>>) -> u64 {
        let answer = tokio::time::timeout(ANSWER_WAIT, at_a.recv()).await;
        let batch = answer.expect("B answers within the wait").expect("B's link stays open");
        batch.iter().map(sequence).max().unwrap_or(0)
    }

    async fn round_trips(link: &mut Link, count: usize) -> Vec<Duration> {
        let mut latencies = Vec::with_capacity(count);
        let mut sent = 0u64;
        for _ in 0..count {
            sent += 1;
            let start = Instant::now();
            link.to_b.send(heartbeat(1, 2, sent));
            while confirmed(&mut link.at_a).await < sent {}
            latencies.push(start.elapsed());
        }
        latencies
    }

    /// Sends `count` AppendEntries with at most [`WINDOW`] unconfirmed; returns the elapsed time.
    async fn pipelined(link: &mut Link, count: u64) -> Duration {
        let start = Instant::now();
        let (mut sent, mut done) = (0u64, 0u64);
        while done < count {
            while sent < count && sent - done < WINDOW as u64 {
                sent += 1;
                link.to_b.send(append(1, 2, sent));
            }
            done = done.max(confirmed(&mut link.at_a).await);
        }
        start.elapsed()
    }

    fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
        let index = ((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1);
        sorted[index].as_secs_f64() * 1e6
    }

    async fn measure(name: &str, mut link: Link, count: usize) {
        round_trips(&mut link, 200).await; // connect and warm up
        let cpu_before = cpu_time();
        let mut latencies = round_trips(&mut link, count).await;
        let cpu_round_trip = cpu_time().saturating_sub(cpu_before);
        latencies.sort();
        let cpu_before = cpu_time();
        let elapsed = pipelined(&mut link, (count * 4) as u64).await;
        let cpu_pipelined = cpu_time().saturating_sub(cpu_before);
        let per_message = |cpu: Duration, messages: usize| cpu.as_secs_f64() * 1e6 / messages as f64;
        println!(
            "{name:<10} round trip p50 {:>6.1} us  p99 {:>6.1} us  CPU {:>5.1} us/message | pipelined {:>8.0} entries/s  CPU {:>5.1} us/entry",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            per_message(cpu_round_trip, count * 2),
            (count * 4) as f64 / elapsed.as_secs_f64(),
            per_message(cpu_pipelined, count * 4),
        );
    }

    pub async fn run(count: usize) {
        println!("peer transport, one process over loopback, {count} round trips, {} pipelined entries", count * 4);
        measure("grpc", grpc_link().await, count).await;
        measure("bare tcp", tcp_link().await, count).await;
    }
}
