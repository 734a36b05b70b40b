//! The client commands: each builds a [`KeelClient`] on `--endpoints`, sends one request (the
//! client follows leader hints and retries what is safe), and prints the answer with
//! [`super::output`]. A failed request prints why and what to do on standard error and exits
//! with 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use keel::client::{ClientError, ClientOptions, Consistency, KeelClient};

use super::output;
use super::{ClientArgs, Command, ConsistencyArg, Format, MemberCommand, EXIT_FAILED, EXIT_USAGE};

/// Why a command did not succeed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The request failed (exit 1).
    Request(ClientError),
    /// The arguments are unusable (exit 2).
    Usage(String),
    /// Some endpoints could not report their status (exit 1); the rest was printed.
    Partial(String),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::InvalidEndpoint { .. } | ClientError::NoEndpoints => Self::Usage(error.to_string()),
            error => Self::Request(error),
        }
    }
}

/// Runs a client command on a single-threaded runtime; returns the exit code.
pub fn run(command: Command) -> ExitCode {
    super::node::init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("Error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Partial(message)) => {
            eprintln!("Error: {message}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Request(error)) => {
            eprintln!("Error: {error}");
            let advice = error.advice();
            if !advice.is_empty() {
                eprintln!("Hint: {advice}");
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The client for `args`: lazy, so that a node that is down costs only its own attempts.
fn client(args: &ClientArgs) -> Result<KeelClient, Failure> {
    let deadline = Duration::from_secs(args.timeout);
    let tls = args.tls().map_err(|error| Failure::Usage(error.to_string()))?;
    let credentials = args.credentials().map_err(Failure::Usage)?;
    let options = ClientOptions {
        deadline,
        request_timeout: ClientOptions::default().request_timeout.min(deadline),
        tls,
        credentials,
        ..ClientOptions::default()
    };
    Ok(KeelClient::new(args.endpoints.clone(), options)?)
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`keel watch ... | head`) is not an error worth reporting.
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

fn consistency(arg: ConsistencyArg) -> Consistency {
    match arg {
        ConsistencyArg::Linearizable => Consistency::Linearizable,
        ConsistencyArg::Lease => Consistency::Lease,
        ConsistencyArg::Eventual => Consistency::Eventual,
    }
}

/// Carries out one client command.
pub async fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Put { key, value, ttl, client: args } => {
            client(&args)?.put(key, value, ttl.map(Duration::from_secs)).await?;
            print(&output::ok(args.format));
        }
        Command::Get { keys, consistency: level, client: args } => {
            let found = client(&args)?.get(keys.clone(), consistency(level)).await?;
            let missing: Vec<String> =
                keys.into_iter().filter(|key| !found.iter().any(|entry| entry.key == key.as_bytes())).collect();
            print(&output::get(args.format, &found, &missing));
            if args.format == Format::Simple && !missing.is_empty() {
                eprintln!("not found: {}", missing.join(" "));
            }
        }
        Command::Del { key, client: args } => {
            client(&args)?.delete(key).await?;
            print(&output::ok(args.format));
        }
        Command::Cas(cas) => {
            let expected = if cas.absent { None } else { cas.expected };
            let succeeded = client(&cas.client)?.cas(cas.key, expected, cas.new).await?;
            print(&output::cas(cas.client.format, succeeded));
        }
        Command::Scan { prefix, client: args } => {
            let result = client(&args)?.scan(prefix).await?;
            print(&output::scan(args.format, &result));
            if args.format == Format::Simple {
                eprintln!("({} keys at revision {})", result.entries.len(), result.revision);
            }
        }
        Command::Watch { key, prefix, prev_kv, rev, client: args } => watch(key, prefix, prev_kv, rev, &args).await?,
        Command::Members { client: args } => {
            let membership = client(&args)?.members().await?;
            print(&output::members(args.format, &membership));
        }
        Command::Member { command } => member(command).await?,
        Command::TransferLeader { id, client: args } => {
            client(&args)?.transfer_leader(id).await?;
            print(&output::ok(args.format));
        }
        Command::Status { client: args } => status(&args).await?,
        Command::Node(_) | Command::Dev(_) | Command::Bench(_) => {
            unreachable!("node, dev and bench are not client commands")
        }
    }
    Ok(())
}

async fn member(command: MemberCommand) -> Result<(), Failure> {
    let (membership, args) = match command {
        MemberCommand::Add { id, address, read_only, client: args } => {
            (client(&args)?.add_learner(id, address, read_only).await?, args)
        }
        MemberCommand::Promote { ids, client: args } => (client(&args)?.promote(&ids).await?, args),
        MemberCommand::Remove { ids, client: args } => (client(&args)?.remove(&ids).await?, args),
    };
    print(&output::members(args.format, &membership));
    Ok(())
}

/// Prints events until the stream ends or Ctrl-C.
async fn watch(key: String, prefix: bool, prev_kv: bool, rev: u64, args: &ClientArgs) -> Result<(), Failure> {
    let client = client(args)?;
    let mut stream = client.watch_from(key.clone(), prefix, prev_kv, rev).await?;
    if args.format == Format::Simple {
        eprintln!("watching {key}{} at {} (Ctrl-C to stop)", if prefix { " (prefix)" } else { "" }, stream.endpoint());
    }
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(event)) => print(&output::watch_event(args.format, &event, prev_kv)),
                Some(Err(error)) => return Err(error.into()),
                None => return Err(Failure::Partial("the node closed the watch stream".into())),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn status(args: &ClientArgs) -> Result<(), Failure> {
    let client = client(args)?;
    // A node that is down is reported as such; the others are still shown.
    let mut statuses = Vec::new();
    let mut failures = Vec::new();
    for (endpoint, result) in client.status_all().await {
        match result {
            Ok(status) => statuses.push(status),
            Err(error) => failures.push((endpoint, error.root().to_string())),
        }
    }
    print(&output::status(args.format, &statuses, &failures));
    if failures.is_empty() {
        Ok(())
    } else if statuses.is_empty() {
        Err(Failure::Partial(
            "no endpoint answered: check that the nodes are running and that --endpoints lists their client addresses"
                .into(),
        ))
    } else {
        Err(Failure::Partial(format!(
            "{} of {} endpoints did not answer",
            failures.len(),
            failures.len() + statuses.len()
        )))
    }
}
