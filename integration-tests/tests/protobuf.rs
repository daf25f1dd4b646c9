//! `protobuf(.reliable).webpubsub.azure.v1`: every message type over real sockets, and
//! delivery across JSON, protobuf and simple clients (spec §3.3, §3.5).

use futures_util::{SinkExt, StreamExt};
use hubcast_integration_tests::{
    JOIN_ROLE, SEND_ROLE, TIMEOUT, TestServer, Ws, request, try_connect,
};
use hubcast_proto::v1::downstream_message::{
    self, DataMessage, Message as Down, system_message::Message as System,
};
use hubcast_proto::v1::upstream_message::{
    EventMessage, JoinGroupMessage, LeaveGroupMessage, Message as Up, PingMessage,
    SendToGroupMessage, SequenceAckMessage,
};
use hubcast_proto::v1::{DownstreamMessage, MessageData, UpstreamMessage, message_data};
use prost::Message as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const HUB: &str = "proto";
const PROTOBUF: &str = "protobuf.webpubsub.azure.v1";
const PROTOBUF_RELIABLE: &str = "protobuf.reliable.webpubsub.azure.v1";

/// A protobuf subprotocol client.
struct ProtoClient {
    ws: Ws,
    /// Messages read while waiting for an ack.
    pending: std::collections::VecDeque<Down>,
    connection_id: String,
    reconnection_token: Option<String>,
}

impl ProtoClient {
    async fn connect(server: &TestServer, user: &str, subprotocol: &str) -> Self {
        let url = server.url(HUB, Some(user), &[JOIN_ROLE, SEND_ROLE], &[]);
        let (ws, response) = try_connect(request(&url, &[subprotocol], None))
            .await
            .expect("handshake");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(subprotocol)
        );
        let mut client = Self {
            ws,
            pending: Default::default(),
            connection_id: String::new(),
            reconnection_token: None,
        };
        let Down::SystemMessage(system) = client.recv().await else {
            panic!("the first message must be a system message");
        };
        let Some(System::ConnectedMessage(connected)) = system.message else {
            panic!("the first message must be `connected`");
        };
        assert_eq!(connected.user_id, user);
        client.connection_id = connected.connection_id;
        client.reconnection_token = connected.reconnection_token;
        client
    }

    async fn send(&mut self, message: Up) {
        let bytes = UpstreamMessage {
            message: Some(message),
        }
        .encode_to_vec();
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send succeeds");
    }

    async fn recv(&mut self) -> Down {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a message within the timeout")
                .expect("the connection is open")
                .expect("a valid frame");
            match frame {
                Message::Binary(bytes) => {
                    return DownstreamMessage::decode(bytes)
                        .expect("a DownstreamMessage")
                        .message
                        .expect("with a message set");
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn ack(&mut self, ack_id: u64) -> downstream_message::AckMessage {
        loop {
            match self.recv().await {
                Down::AckMessage(ack) if ack.ack_id == ack_id => return ack,
                other @ Down::DataMessage(_) => self.pending.push_back(other),
                other => panic!("expected ack {ack_id}, got {other:?}"),
            }
        }
    }

    async fn data(&mut self) -> DataMessage {
        let next = match self.pending.pop_front() {
            Some(message) => message,
            None => self.recv().await,
        };
        match next {
            Down::DataMessage(data) => data,
            other => panic!("expected a data message, got {other:?}"),
        }
    }

    async fn join(&mut self, group: &str, ack_id: u64) {
        self.send(Up::JoinGroupMessage(JoinGroupMessage {
            group: group.into(),
            ack_id: Some(ack_id),
        }))
        .await;
        assert!(self.ack(ack_id).await.success);
    }

    async fn publish(&mut self, group: &str, data: message_data::Data, ack_id: u64) {
        self.send(Up::SendToGroupMessage(SendToGroupMessage {
            group: group.into(),
            ack_id: Some(ack_id),
            data: Some(MessageData { data: Some(data) }),
            ..Default::default()
        }))
        .await;
        let ack = self.ack(ack_id).await;
        assert!(ack.success, "{ack:?}");
    }
}

fn any() -> prost_types::Any {
    prost_types::Any {
        type_url: "type.googleapis.com/demo.Point".into(),
        value: vec![0x08, 0x01, 0x10, 0x02],
    }
}

#[tokio::test]
async fn every_upstream_message_type_round_trips() {
    let server = TestServer::start().await;
    let mut client = ProtoClient::connect(&server, "p", PROTOBUF).await;
    assert!(client.reconnection_token.is_none(), "not reliable");

    client.join("g", 1).await;
    client
        .publish("g", message_data::Data::TextData("hi".into()), 2)
        .await;
    let data = client.data().await;
    assert_eq!(
        (data.from.as_str(), data.group.as_deref(), data.sequence_id),
        ("group", Some("g"), None)
    );
    assert_eq!(
        data.data.and_then(|d| d.data),
        Some(message_data::Data::TextData("hi".into()))
    );

    client
        .send(Up::EventMessage(EventMessage {
            event: "chat".into(),
            ack_id: Some(3),
            data: Some(MessageData {
                data: Some(message_data::Data::TextData("e".into())),
            }),
            ..Default::default()
        }))
        .await;
    assert!(client.ack(3).await.success);

    client.send(Up::PingMessage(PingMessage {})).await;
    assert!(matches!(client.recv().await, Down::PongMessage(_)));

    client
        .send(Up::LeaveGroupMessage(LeaveGroupMessage {
            group: "g".into(),
            ack_id: Some(4),
        }))
        .await;
    assert!(client.ack(4).await.success);

    // The same ack id again: Duplicate, not executed twice.
    client
        .send(Up::JoinGroupMessage(JoinGroupMessage {
            group: "g".into(),
            ack_id: Some(1),
        }))
        .await;
    let ack = client.ack(1).await;
    assert_eq!(
        (ack.success, ack.error.map(|e| e.name)),
        (false, Some("Duplicate".into()))
    );

    // Permissions apply as to JSON clients.
    let url = server.url(HUB, Some("weak"), &[], &[]);
    let (ws, _) = try_connect(request(&url, &[PROTOBUF], None))
        .await
        .expect("handshake");
    let mut weak = ProtoClient {
        ws,
        pending: Default::default(),
        connection_id: String::new(),
        reconnection_token: None,
    };
    weak.recv().await;
    weak.send(Up::JoinGroupMessage(JoinGroupMessage {
        group: "g".into(),
        ack_id: Some(9),
    }))
    .await;
    let ack = weak.ack(9).await;
    assert_eq!(ack.error.map(|e| e.name), Some("Forbidden".into()));
}

#[tokio::test]
async fn reliable_protobuf_numbers_data_and_accepts_sequence_acks() {
    let server = TestServer::start().await;
    let mut client = ProtoClient::connect(&server, "p", PROTOBUF_RELIABLE).await;
    assert!(client.reconnection_token.is_some(), "reliable");
    client.join("g", 1).await;
    for i in 1..=3_u64 {
        client
            .publish("g", message_data::Data::TextData(format!("m{i}")), 10 + i)
            .await;
        assert_eq!(client.data().await.sequence_id, Some(i));
    }
    client
        .send(Up::SequenceAckMessage(SequenceAckMessage {
            sequence_id: 3,
        }))
        .await;
    client.send(Up::PingMessage(PingMessage {})).await;
    assert!(matches!(client.recv().await, Down::PongMessage(_)));
    assert_eq!(
        server
            .router()
            .connection(HUB, &client.connection_id)
            .expect("connected")
            .outbox()
            .unacknowledged(),
        (0, 0),
        "the cumulative ack emptied the buffer"
    );
}

#[tokio::test]
async fn reliable_protobuf_recovers_with_the_unacked_messages() {
    let server = TestServer::start().await;
    let mut client = ProtoClient::connect(&server, "p", PROTOBUF_RELIABLE).await;
    client.join("g", 1).await;
    let mut sender = server.json_client(HUB, Some("s"), &[SEND_ROLE], &[]).await;
    sender.publish_text("g", "before").await;
    assert_eq!(client.data().await.sequence_id, Some(1));
    let url = format!(
        "{}&awps_connection_id={}&awps_reconnection_token={}",
        server.url_to_node_of(&client.connection_id, HUB, Some("p"), &[], &[]),
        client.connection_id,
        client.reconnection_token.clone().expect("reliable")
    );
    drop(client);
    sender.publish_text("g", "during").await;
    let (ws, _) = try_connect(request(&url, &[PROTOBUF_RELIABLE], None))
        .await
        .expect("handshake");
    let mut recovered = ProtoClient {
        ws,
        pending: Default::default(),
        connection_id: String::new(),
        reconnection_token: None,
    };
    assert!(matches!(recovered.recv().await, Down::SystemMessage(_)));
    let texts: Vec<_> = [recovered.data().await, recovered.data().await]
        .into_iter()
        .map(|d| (d.sequence_id, d.data.and_then(|d| d.data)))
        .collect();
    assert_eq!(
        texts,
        vec![
            (Some(1), Some(message_data::Data::TextData("before".into()))),
            (Some(2), Some(message_data::Data::TextData("during".into()))),
        ]
    );
}

#[tokio::test]
async fn bad_frames_close_with_the_right_codes() {
    let server = TestServer::start().await;
    for (frame, code) in [
        (Message::text("{}"), 1003_u16),
        (Message::binary(vec![0xff, 0xff, 0xff]), 1007),
    ] {
        let mut client = ProtoClient::connect(&server, "p", PROTOBUF).await;
        client.ws.send(frame).await.expect("send");
        let disconnected = client.recv().await;
        assert!(
            matches!(&disconnected, Down::SystemMessage(s) if matches!(s.message, Some(System::DisconnectedMessage(_)))),
            "{disconnected:?}"
        );
        let close = tokio::time::timeout(TIMEOUT, client.ws.next())
            .await
            .expect("close in time");
        match close {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), code),
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

/// What each kind of client receives for each payload published by JSON and protobuf
/// clients (spec §3.3).
#[tokio::test]
async fn delivery_matrix_across_json_protobuf_and_simple_clients() {
    let server = TestServer::start().await;
    let mut json_rx = server
        .json_client(HUB, Some("j"), &[JOIN_ROLE], &["m"])
        .await;
    let mut proto_rx = ProtoClient::connect(&server, "pr", PROTOBUF).await;
    proto_rx.join("m", 1).await;
    let simple_url = server.url(HUB, Some("s"), &[], &["m"]);
    let (mut simple_rx, _) = try_connect(request(&simple_url, &[], None))
        .await
        .expect("simple handshake");
    let mut json_tx = server.json_client(HUB, Some("jt"), &[SEND_ROLE], &[]).await;
    let mut proto_tx = ProtoClient::connect(&server, "pt", PROTOBUF).await;

    let any = any();
    let any_bytes = any.encode_to_vec();
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    // (JSON dataType, JSON data, protobuf payload, expected simple frame)
    let cases: Vec<(&str, Value, message_data::Data, Message)> = vec![
        (
            "text",
            json!("hello"),
            message_data::Data::TextData("hello".into()),
            Message::text("hello"),
        ),
        (
            "json",
            json!({"a": [1, 2]}),
            message_data::Data::JsonData(r#"{"a":[1,2]}"#.into()),
            Message::text(r#"{"a":[1,2]}"#),
        ),
        (
            "binary",
            json!(b64(&[0, 1, 2])),
            message_data::Data::BinaryData(vec![0, 1, 2].into()),
            Message::binary(vec![0, 1, 2]),
        ),
        (
            "protobuf",
            json!(b64(&any_bytes)),
            message_data::Data::ProtobufData(any.clone()),
            Message::binary(any_bytes.clone()),
        ),
    ];

    for (ack, (data_type, json_data, proto_data, simple_frame)) in (100_u64..).zip(cases) {
        for from_proto in [false, true] {
            if from_proto {
                proto_tx.publish("m", proto_data.clone(), ack + 50).await;
            } else {
                json_tx
                    .send(json!({"type": "sendToGroup", "group": "m", "dataType": data_type, "data": json_data, "ackId": ack}))
                    .await;
                json_tx.expect_ack_ok(ack).await;
            }
            let got = json_rx.recv_message().await;
            assert_eq!(got["dataType"], data_type, "{got}");
            assert_eq!(got["data"], json_data, "{got}");
            assert_eq!(
                got["fromUserId"],
                if from_proto { "pt" } else { "jt" },
                "{got}"
            );

            let data = proto_rx.data().await;
            assert_eq!(data.group.as_deref(), Some("m"));
            assert_eq!(
                data.data.and_then(|d| d.data),
                Some(proto_data.clone()),
                "protobuf receiver, {data_type} from proto={from_proto}"
            );

            let frame = loop {
                let frame = tokio::time::timeout(TIMEOUT, simple_rx.next())
                    .await
                    .expect("frame in time")
                    .expect("open")
                    .expect("valid");
                if !matches!(frame, Message::Ping(_) | Message::Pong(_)) {
                    break frame;
                }
            };
            assert_eq!(
                frame, simple_frame,
                "simple receiver, {data_type} from proto={from_proto}"
            );
        }
    }
    // JSON data a protobuf client sends must be JSON.
    proto_tx
        .send(Up::SendToGroupMessage(SendToGroupMessage {
            group: "m".into(),
            ack_id: Some(999),
            data: Some(MessageData {
                data: Some(message_data::Data::JsonData("{not json".into())),
            }),
            ..Default::default()
        }))
        .await;
    let ack = proto_tx.ack(999).await;
    assert_eq!(ack.error.map(|e| e.name), Some("BadRequest".into()));
}
