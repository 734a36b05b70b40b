//! `keel-protoc` run the way prost-build runs `protoc`: the descriptor set it writes holds the
//! files, their imports and their comments, and a broken input fails with a message and no output.

use std::path::Path;
use std::process::Command;

use prost::Message;
use prost_types::FileDescriptorSet;

const BINARY: &str = env!("CARGO_BIN_EXE_keel-protoc");

/// A fresh directory under the target's temporary directory, named after the test.
fn scratch_directory(name: &str) -> std::path::PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(directory.join("protos/shop")).expect("create the scratch directory");
    directory
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a test proto");
}

#[test]
fn writes_the_files_their_imports_and_their_comments_in_prost_builds_argument_form() {
    let directory = scratch_directory("imports");
    write(
        &directory.join("protos/shop/item.proto"),
        "syntax = \"proto3\";\npackage shop;\n// An item on a shelf.\nmessage Item { string name = 1; }\n",
    );
    write(
        &directory.join("protos/shop/order.proto"),
        "syntax = \"proto3\";\npackage shop;\nimport \"shop/item.proto\";\n\
         message Order { repeated Item items = 1; optional uint64 total_cents = 2; }\n",
    );
    let output = directory.join("set.bin");
    let status = Command::new(BINARY)
        .current_dir(&directory)
        .args(["--include_imports", "--include_source_info", "-o"])
        .arg(&output)
        .args(["-I", "protos", "--experimental_allow_proto3_optional", "protos/shop/order.proto"])
        .status()
        .expect("run keel-protoc");
    assert!(status.success(), "keel-protoc failed: {status}");

    let bytes = std::fs::read(&output).expect("the descriptor set was written");
    let set = FileDescriptorSet::decode(bytes.as_slice()).expect("a FileDescriptorSet");
    let names: Vec<&str> = set.file.iter().map(|file| file.name()).collect();
    assert_eq!(names, ["shop/item.proto", "shop/order.proto"], "imports come first, then the file");
    let item = &set.file[0];
    assert_eq!(item.message_type[0].name(), "Item");
    let comments: Vec<&str> = item
        .source_code_info
        .iter()
        .flat_map(|info| &info.location)
        .filter_map(|location| location.leading_comments.as_deref())
        .collect();
    assert_eq!(comments, [" An item on a shelf.\n"], "source info keeps the comment");
}

#[test]
fn without_include_imports_only_the_named_file_is_written() {
    let directory = scratch_directory("no_imports");
    write(&directory.join("protos/shop/item.proto"), "syntax = \"proto3\";\npackage shop;\nmessage Item {}\n");
    write(
        &directory.join("protos/shop/order.proto"),
        "syntax = \"proto3\";\npackage shop;\nimport \"shop/item.proto\";\nmessage Order { shop.Item item = 1; }\n",
    );
    let output = directory.join("set.bin");
    let status = Command::new(BINARY)
        .current_dir(&directory)
        .arg(format!("--descriptor_set_out={}", output.display()))
        .args(["--proto_path=protos", "protos/shop/order.proto"])
        .status()
        .expect("run keel-protoc");
    assert!(status.success());
    let set = FileDescriptorSet::decode(std::fs::read(&output).expect("written").as_slice()).expect("decodes");
    let names: Vec<&str> = set.file.iter().map(|file| file.name()).collect();
    assert_eq!(names, ["shop/order.proto"]);
    assert!(set.file[0].source_code_info.is_none(), "no source info unless asked for");
}

#[test]
fn a_broken_file_fails_with_the_compilers_message_and_writes_nothing() {
    let directory = scratch_directory("broken");
    write(&directory.join("protos/shop/bad.proto"), "syntax = \"proto3\";\nmessage Bad { strin name = 1; }\n");
    let output = directory.join("set.bin");
    let result = Command::new(BINARY)
        .current_dir(&directory)
        .arg("-o")
        .arg(&output)
        .args(["-Iprotos", "protos/shop/bad.proto"])
        .output()
        .expect("run keel-protoc");
    assert!(!result.status.success(), "a type that does not exist must fail");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("cannot compile protos/shop/bad.proto") && stderr.contains("strin"), "{stderr}");
    assert!(!output.exists(), "nothing is written on failure");
}
