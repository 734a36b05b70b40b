//! Bad input: an empty key, a key or value over the limit, a request over the message limit, a
//! malformed request and unknown member ids each get a clear error, and the node keeps serving.

use bytes::{Buf, BufMut, Bytes};
use keel::client::ClientError;
use keel::proto::client::raft_client_service_client::RaftClientServiceClient;
use keel::proto::client::write_command::{Insert, Operation};
use keel::proto::client::{ClientResponse, ClientWriteRequest, WriteCommand};
use keel::proto::error::ErrorCode;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Code;

use crate::cluster::Cluster;

/// Sends bytes as they are and returns the answer's bytes: a client that can send what no
/// generated stub would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, destination: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        destination.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, source: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(source.copy_to_bytes(source.remaining())))
    }
}

/// Sends `body` as the request message of `HandleClientWrite`.
async fn raw_write(channel: Channel, body: Bytes) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path = PathAndQuery::from_static("/keel.client.RaftClientService/HandleClientWrite");
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
}

fn insert(key: impl Into<Bytes>, value: impl Into<Bytes>) -> ClientWriteRequest {
    let insert = Insert { key: key.into(), value: value.into(), ttl_secs: 0 };
    ClientWriteRequest { client_id: 1, command: Some(WriteCommand { operation: Some(Operation::Insert(insert)) }) }
}

/// Writes through the generated stub and returns the in-band error code and message.
async fn refused(client: &mut RaftClientServiceClient<Channel>, request: ClientWriteRequest) -> (ErrorCode, String) {
    let response: ClientResponse = client.handle_client_write(request).await.expect("an in-band answer").into_inner();
    (response.error(), response.metadata.map(|metadata| metadata.message).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_node_keeps_serving() {
    let flags = ["--key-bytes-max", "64", "--value-bytes-max", "1024", "--message-bytes-max", "2000000"];
    let mut cluster = Cluster::start(3, &flags);
    let leader = cluster.leader(&[1, 2, 3]).await;
    let address = format!("http://{}", cluster.nodes[&leader].address);
    let channel = Channel::from_shared(address).expect("a valid uri").connect().await.expect("connects");
    let mut client = RaftClientServiceClient::new(channel.clone());

    let (code, message) = refused(&mut client, insert("", "v")).await;
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(message.contains("empty"), "{message}");
    let (code, message) = refused(&mut client, insert(vec![b'k'; 65], "v")).await;
    assert_eq!(code, ErrorCode::KeyTooLarge);
    assert!(message.contains("65") && message.contains("64"), "says the size and the limit: {message}");
    let (code, message) = refused(&mut client, insert("/k", vec![b'v'; 1025])).await;
    assert_eq!(code, ErrorCode::ValueTooLarge);
    assert!(message.contains("1025") && message.contains("1024"), "{message}");
    let no_command = ClientWriteRequest { client_id: 1, command: None };
    assert_eq!(refused(&mut client, no_command).await.0, ErrorCode::InvalidArgument);

    // Over the gRPC message limit, and bytes that are no protobuf message at all.
    let oversized = client.handle_client_write(insert("/k", vec![b'v'; 2_100_000])).await.expect_err("refused");
    // tonic's own check, before any Keel code runs: OUT_OF_RANGE, with both sizes.
    assert_eq!(oversized.code(), Code::OutOfRange, "{oversized:?}");
    assert!(oversized.message().contains("2100021") && oversized.message().contains("2000000"), "{oversized:?}");
    let malformed = raw_write(channel.clone(), Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff])).await;
    let status = malformed.expect_err("a malformed request is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(!status.message().is_empty());

    // Unknown members, and one that already exists.
    let cluster_client = cluster.client();
    for result in [cluster_client.remove(&[99]).await, cluster_client.promote(&[99]).await] {
        let error = result.expect_err("refused");
        assert_eq!(error.code(), Some(ErrorCode::UnknownMember), "{error}");
        assert!(error.to_string().contains("99"), "names the id: {error}");
    }
    let existing = cluster_client.add_learner(1, "127.0.0.1:1", false).await.expect_err("refused");
    assert_eq!(existing.code(), Some(ErrorCode::MemberAlreadyExists), "{existing}");
    assert!(matches!(existing.root(), ClientError::Server { .. }));

    // Nothing of the above hurt: every node runs and the cluster serves.
    cluster_client.put("/still/serving", "yes", None).await.expect("write");
    assert_eq!(cluster_client.get_one("/still/serving").await.expect("read"), Some("yes".into()));
    for node in cluster.nodes.values_mut() {
        assert!(node.is_running(), "node {} is still up", node.id);
    }
}
