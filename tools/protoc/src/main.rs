//! `keel-protoc`: the part of `protoc`'s command line that prost-build drives, answered by protox,
//! the pure-Rust protobuf compiler.
//!
//! prost-build (and so tonic-build) compiles `.proto` files by running the program named by the
//! `PROTOC` environment variable as
//! `protoc --include_imports --include_source_info -o <set> -I <dir>... <file>...` and then reads
//! the encoded `FileDescriptorSet` it wrote. Keel's own build script calls protox as a library, but
//! the etcd-client crate used by `tests/etcd-client` runs `PROTOC`; pointing it at this binary
//! (built by `cargo build -p keel-protoc` with the rest of the workspace) keeps the rule that
//! nothing outside cargo is needed to build or test.
//!
//! Data flow: arguments → protox `Compiler` (include paths, the files to open) → the encoded
//! descriptor set written to `-o`. A parse error or a missing file exits with status 1 and the
//! compiler's message, as protoc does; nothing is written then.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The accepted arguments: protoc's spellings of each (`-I DIR`, `-IDIR`, `--proto_path=DIR`,
/// `-o FILE`, `--descriptor_set_out=FILE`, ...).
#[derive(Debug, Parser)]
#[command(name = "keel-protoc", version, about = "protoc's descriptor-set output, by protox")]
struct Arguments {
    /// A directory in which to look for the files and their imports (the current directory when
    /// none is given).
    #[arg(short = 'I', long = "proto_path", value_name = "DIR")]
    include_directories: Vec<PathBuf>,
    /// Where to write the encoded `FileDescriptorSet`. Without it the files are only checked.
    #[arg(short = 'o', long = "descriptor_set_out", value_name = "FILE")]
    descriptor_set_out: Option<PathBuf>,
    /// Also write every file the given ones import, so the set stands alone.
    #[arg(long = "include_imports")]
    include_imports: bool,
    /// Keep comments and source positions in the descriptors (prost-build turns them into docs).
    #[arg(long = "include_source_info")]
    include_source_info: bool,
    /// Accepted for compatibility: protox always allows proto3 `optional`.
    #[arg(long = "experimental_allow_proto3_optional", hide = true)]
    allow_proto3_optional: bool,
    /// The `.proto` files to compile, each inside one of the include directories.
    #[arg(value_name = "PROTO_FILE", required = true)]
    files: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    match compile(&arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keel-protoc: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Compiles the files and writes the descriptor set; the error is a message for the user.
fn compile(arguments: &Arguments) -> Result<(), String> {
    let include_directories = if arguments.include_directories.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        arguments.include_directories.clone()
    };
    let mut compiler = protox::Compiler::new(&include_directories)
        .map_err(|error| format!("cannot use the include directories {include_directories:?}: {error}"))?;
    compiler.include_imports(arguments.include_imports);
    compiler.include_source_info(arguments.include_source_info);
    for file in &arguments.files {
        compiler.open_file(file).map_err(|error| format!("cannot compile {}: {error}", file.display()))?;
    }
    if let Some(path) = &arguments.descriptor_set_out {
        std::fs::write(path, compiler.encode_file_descriptor_set())
            .map_err(|error| format!("cannot write the descriptor set to {}: {error}", path.display()))?;
    }
    Ok(())
}
