//! The replication floor: what this machine allows a replicated, fsynced etcd `Put` to reach,
//! measured with the same load generator (`keel bench --api etcd`) as Keel and etcd.
//!
//! Three processes on loopback do the least work any Raft cluster with sync on must do for a
//! write, and nothing else: no log index, terms, elections, MVCC store, checks or limits. The
//! leader serves etcd's `KV.Put` with tonic (the etcd API is gRPC, so every implementation pays
//! for HTTP/2 on the client's call). Its one replication thread takes every `Put` that is
//! waiting as one batch, writes the batch to both followers' TCP connections and to its own
//! file, `fdatasync`s that file, and waits until one follower has acknowledged the batch: the
//! batch is then on a quorum's disks, and each waiting `Put` is answered. A follower is one
//! thread: it reads what has arrived, appends it to its file, `fdatasync`s, and answers with the
//! last index it holds. One batch is in flight at a time, so batches grow with the load (group
//! commit at both ends). Each log file is filled with zeros once at start and then written in
//! place, so an `fdatasync` flushes data only, with no file size or block allocation to journal.
//!
//! This is a yardstick, not an implementation: it loses everything on any fault. A real engine
//! does strictly more per write, so where its numbers stand against the floor says how much of
//! the machine it leaves unused, and a target above the floor is beyond this machine for any
//! engine driven this way.
//!
//! Run: `cargo bench -p keel-runtime --bench replication_floor`. It starts the three processes
//! (this binary again, with `node`), drives them with the `keel` binary of this build
//! (`keel bench --api etcd --workload write`, 256-byte values, 10,000 keys, `min(clients, 4)`
//! connections, as `bench/etcd-vs-keel.sh` does) and prints writes/s, latency and the three
//! processes' CPU time per write. Settings (environment): `CLIENTS` ("1 64"), `DURATION` (10),
//! `WARMUP` (2), both in seconds, `WORK` (data directory; a new one under the system's temporary
//! directory by default: the same disk as the script's), `PORT` (27201: the client port; the
//! followers listen on the next two). `SYSTEMS="etcd keel floor" bench/etcd-vs-keel.sh` runs the
//! floor's nodes in turn with Keel and etcd and sets the write targets beside it.

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| arg != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("node") => floor::node(&args[1..]),
        _ => floor::orchestrate(),
    }
}

#[cfg(not(madsim))]
mod floor {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    use keel::proto::etcdserverpb as pb;
    use pb::kv_server::{Kv, KvServer};
    use pb::maintenance_server::{Maintenance, MaintenanceServer};
    use tonic::{Request, Response, Status};

    /// `Put`s waiting for the replication thread; a full queue answers `RESOURCE_EXHAUSTED`.
    const PROPOSALS_MAX: usize = 16_384;
    /// Largest frame a follower accepts, in bytes.
    const FRAME_BYTES_MAX: usize = 64 << 20;
    /// Size of each node's log file, written round and round.
    const LOG_BYTES: u64 = 256 << 20;
    /// How long the leader tries to reach a follower at start.
    const CONNECT_WAIT: Duration = Duration::from_secs(10);

    fn setting(name: &str, default: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| default.to_owned())
    }

    /// Starts the three processes, drives them at each client count, prints one line each.
    pub fn orchestrate() {
        let port: u16 = setting("PORT", "27201").parse().expect("PORT is a port number");
        let duration_s: u64 = setting("DURATION", "10").parse().expect("DURATION is in whole seconds");
        let warmup_s: u64 = setting("WARMUP", "2").parse().expect("WARMUP is in whole seconds");
        let clients: Vec<usize> = setting("CLIENTS", "1 64")
            .split_whitespace()
            .map(|count| count.parse().expect("CLIENTS holds numbers"))
            .collect();
        let work = match std::env::var("WORK") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) => tempfile::Builder::new().prefix("keel-floor").tempdir().expect("a temporary directory").keep(),
        };
        std::fs::create_dir_all(&work).expect("the WORK directory");
        let me = std::env::current_exe().expect("this binary's path");
        let spawn = |id: u16| -> Child {
            Command::new(&me)
                .args(["node", &id.to_string(), &port.to_string()])
                .arg(work.join(format!("floor{id}.log")))
                .stdout(Stdio::null())
                .spawn()
                .expect("a floor node process")
        };
        // Followers first: the leader connects to them.
        let mut nodes = vec![spawn(2), spawn(3), spawn(1)];
        let endpoint = format!("127.0.0.1:{port}");
        wait_ready(&endpoint);
        println!("replication floor, 3 processes, fdatasync on, data in {}", work.display());
        println!("{:>7} {:>10} {:>8} {:>8} {:>14}", "clients", "writes/s", "p50 ms", "p99 ms", "server CPU µs");
        for count in clients {
            let pids: Vec<u32> = nodes.iter().map(Child::id).collect();
            measure(&endpoint, count, duration_s, warmup_s, &pids);
        }
        for node in &mut nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }

    fn generator(endpoint: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command.args(["bench", "--api", "etcd", "--endpoints", endpoint, "--workload", "write", "-w", "json"]);
        command
    }

    fn wait_ready(endpoint: &str) {
        for _ in 0..60 {
            let probe = generator(endpoint)
                .args(["--requests", "1", "--warmup", "0s", "--clients", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if probe.is_ok_and(|status| status.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("the floor's leader did not answer a Put within 30 s");
    }

    /// One closed-loop run; the CPU time is the nodes' from the end of the warm-up to the end.
    fn measure(endpoint: &str, clients: usize, duration_s: u64, warmup_s: u64, pids: &[u32]) {
        let run = generator(endpoint)
            .args(["--clients", &clients.to_string(), "--connections", &clients.min(4).to_string()])
            .args(["--duration", &format!("{duration_s}s"), "--warmup", &format!("{warmup_s}s")])
            .args(["--keys", "10000", "--value-size", "256"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the keel load generator");
        std::thread::sleep(Duration::from_secs(warmup_s));
        let ticks_start = cpu_ticks(pids);
        let output = run.wait_with_output().expect("the load generator's report");
        let ticks = cpu_ticks(pids) - ticks_start;
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
        let succeeded = report["succeeded"].as_f64().unwrap_or(0.0);
        let cpu_us = ticks as f64 / ticks_per_second() * 1e6 / succeeded.max(1.0);
        println!(
            "{clients:>7} {:>10.0} {:>8.2} {:>8.2} {cpu_us:>14.0}",
            report["throughput"].as_f64().unwrap_or(f64::NAN),
            report["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            report["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        );
    }

    /// User and system CPU time of the processes, in clock ticks (`/proc/<pid>/stat`).
    fn cpu_ticks(pids: &[u32]) -> u64 {
        pids.iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .map(|stat| {
                let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
                let fields: Vec<u64> = after_name.split(' ').map(|field| field.parse().unwrap_or(0)).collect();
                fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
            })
            .sum()
    }

    fn ticks_per_second() -> f64 {
        let output = Command::new("getconf").arg("CLK_TCK").output();
        output.ok().and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok()).unwrap_or(100.0)
    }

    /// `node <id> <client port> <log file>`: node 1 leads, 2 and 3 follow.
    pub fn node(args: &[String]) {
        let id: u16 = args[0].parse().expect("a node id");
        let port: u16 = args[1].parse().expect("the client port");
        let log = PathBuf::from(&args[2]);
        if id == 1 {
            lead(port, &log);
        } else {
            follow(port + id - 1, &log);
        }
    }

    /// A log file written in place: filled with zeros and synced once at start, then written
    /// round and round (what it holds is never read), so that `fdatasync` never has a file size
    /// or block allocation to journal, only the data to flush.
    struct Log {
        file: std::fs::File,
        offset: u64,
    }

    impl Log {
        fn open(path: &Path) -> Self {
            let file = std::fs::File::create(path).expect("the log file");
            let zeros = vec![0u8; 1 << 20];
            for chunk in 0..(LOG_BYTES >> 20) {
                file.write_all_at(&zeros, chunk << 20).expect("the log's zeros");
            }
            file.sync_all().expect("the log's first sync");
            Self { file, offset: 0 }
        }

        /// Writes `bytes` after the last write (at the start if they do not fit) and makes them
        /// durable.
        fn append(&mut self, bytes: &[u8]) {
            assert!(bytes.len() as u64 <= LOG_BYTES, "a batch of {} bytes", bytes.len());
            if self.offset + bytes.len() as u64 > LOG_BYTES {
                self.offset = 0;
            }
            self.file.write_all_at(bytes, self.offset).expect("a log write");
            self.file.sync_data().expect("an fdatasync");
            self.offset += bytes.len() as u64;
        }
    }

    /// A follower: one thread reads what has arrived, appends it, syncs, acknowledges.
    fn follow(port: u16, path: &Path) {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the follower's port");
        let (mut stream, _) = listener.accept().expect("the leader's connection");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut log = Log::open(path);
        let mut buffer = Vec::with_capacity(1 << 20);
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let read = stream.read(&mut chunk).expect("a read from the leader");
            if read == 0 {
                return;
            }
            buffer.extend_from_slice(&chunk[..read]);
            // Whole frames: [u32 length][u64 last index][entries].
            let (mut consumed, mut last_index) = (0, None);
            while buffer.len() - consumed >= 4 {
                let length = u32::from_le_bytes(buffer[consumed..consumed + 4].try_into().expect("4 bytes")) as usize;
                assert!((8..=FRAME_BYTES_MAX).contains(&length), "a frame of {length} bytes");
                if buffer.len() - consumed < 4 + length {
                    break;
                }
                let frame = &buffer[consumed + 4..consumed + 4 + length];
                last_index = Some(u64::from_le_bytes(frame[..8].try_into().expect("8 bytes")));
                consumed += 4 + length;
            }
            if let Some(index) = last_index {
                log.append(&buffer[..consumed]);
                stream.write_all(&index.to_le_bytes()).expect("an acknowledgement");
                buffer.drain(..consumed);
            }
        }
    }

    /// A `Put` waiting for its batch to be on a quorum.
    struct Proposal {
        entry: Vec<u8>,
        done: tokio::sync::oneshot::Sender<u64>,
    }

    /// The highest index each follower has acknowledged.
    #[derive(Default)]
    struct Acknowledged {
        indexes: Mutex<[u64; 2]>,
        changed: Condvar,
    }

    fn lead(port: u16, path: &Path) {
        let followers: Vec<TcpStream> = [port + 1, port + 2].iter().map(|&port| connect(port)).collect();
        let acknowledged = Arc::new(Acknowledged::default());
        for (slot, follower) in followers.iter().enumerate() {
            let mut reader = follower.try_clone().expect("a second handle on the follower's socket");
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let mut index = [0u8; 8];
                while reader.read_exact(&mut index).is_ok() {
                    acknowledged.indexes.lock().expect("not poisoned")[slot] = u64::from_le_bytes(index);
                    acknowledged.changed.notify_all();
                }
            });
        }
        let (proposals, receiver) = sync_channel(PROPOSALS_MAX);
        let log = Log::open(path);
        std::thread::spawn(move || replicate(&receiver, followers, log, &acknowledged));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        runtime.expect("a tokio runtime").block_on(async move {
            let service = Floor { proposals };
            tonic::transport::Server::builder()
                .add_service(KvServer::new(service.clone()))
                .add_service(MaintenanceServer::new(service))
                .serve(([127, 0, 0, 1], port).into())
                .await
                .expect("the client port");
        });
    }

    fn connect(port: u16) -> TcpStream {
        let start = Instant::now();
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => {
                    stream.set_nodelay(true).expect("TCP_NODELAY");
                    return stream;
                }
                Err(error) if start.elapsed() > CONNECT_WAIT => panic!("follower on port {port}: {error}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The leader's replication thread: takes every waiting `Put` as one batch, sends it to both
    /// followers, appends and syncs it here, waits for one follower, answers the batch's `Put`s.
    fn replicate(
        proposals: &Receiver<Proposal>,
        mut followers: Vec<TcpStream>,
        mut log: Log,
        acknowledged: &Acknowledged,
    ) {
        let mut last_index = 0u64;
        let mut frame = Vec::with_capacity(1 << 20);
        while let Ok(first) = proposals.recv() {
            let batch: Vec<Proposal> = std::iter::once(first).chain(proposals.try_iter()).collect();
            last_index += batch.len() as u64;
            frame.clear();
            frame.extend_from_slice(&[0; 4]);
            frame.extend_from_slice(&last_index.to_le_bytes());
            for proposal in &batch {
                frame.extend_from_slice(&(proposal.entry.len() as u32).to_le_bytes());
                frame.extend_from_slice(&proposal.entry);
            }
            let length = (frame.len() - 4) as u32;
            frame[..4].copy_from_slice(&length.to_le_bytes());
            for follower in &mut followers {
                follower.write_all(&frame).expect("a write to a follower");
            }
            log.append(&frame);
            let mut indexes = acknowledged.indexes.lock().expect("not poisoned");
            while indexes.iter().all(|&index| index < last_index) {
                indexes = acknowledged.changed.wait(indexes).expect("not poisoned");
            }
            drop(indexes);
            let first_index = last_index - batch.len() as u64 + 1;
            for (offset, proposal) in batch.into_iter().enumerate() {
                let _ = proposal.done.send(first_index + offset as u64);
            }
        }
    }

    /// The leader's etcd API: `Put`, and the `Status` the load generator asks for the leader.
    #[derive(Clone)]
    struct Floor {
        proposals: SyncSender<Proposal>,
    }

    fn header(revision: u64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader { cluster_id: 1, member_id: 1, revision: revision as i64, raft_term: 1 })
    }

    fn not_served<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("the replication floor serves Put and Status only"))
    }

    #[tonic::async_trait]
    impl Kv for Floor {
        async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
            let request = request.into_inner();
            let mut entry = Vec::with_capacity(8 + request.key.len() + request.value.len());
            entry.extend_from_slice(&(request.key.len() as u32).to_le_bytes());
            entry.extend_from_slice(&request.key);
            entry.extend_from_slice(&request.value);
            let (done, answer) = tokio::sync::oneshot::channel();
            match self.proposals.try_send(Proposal { entry, done }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(Status::resource_exhausted("too many Puts waiting")),
                Err(TrySendError::Disconnected(_)) => return Err(Status::unavailable("replication stopped")),
            }
            let index = answer.await.map_err(|_| Status::unavailable("replication stopped"))?;
            Ok(Response::new(pb::PutResponse { header: header(index), prev_kv: None }))
        }
        async fn range(&self, _: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
            not_served()
        }
        async fn delete_range(
            &self,
            _: Request<pb::DeleteRangeRequest>,
        ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
            not_served()
        }
        async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
            not_served()
        }
        async fn compact(&self, _: Request<pb::CompactionRequest>) -> Result<Response<pb::CompactionResponse>, Status> {
            not_served()
        }
    }

    #[tonic::async_trait]
    impl Maintenance for Floor {
        type SnapshotStream = tonic::codegen::tokio_stream::Empty<Result<pb::SnapshotResponse, Status>>;

        async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
            Ok(Response::new(pb::StatusResponse { header: header(0), leader: 1, ..Default::default() }))
        }
        async fn alarm(&self, _: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
            not_served()
        }
        async fn defragment(
            &self,
            _: Request<pb::DefragmentRequest>,
        ) -> Result<Response<pb::DefragmentResponse>, Status> {
            not_served()
        }
        async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
            not_served()
        }
        async fn hash_kv(&self, _: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
            not_served()
        }
        async fn snapshot(&self, _: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
            not_served()
        }
        async fn move_leader(
            &self,
            _: Request<pb::MoveLeaderRequest>,
        ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
            not_served()
        }
    }
}
