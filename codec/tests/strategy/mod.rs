//! proptest strategies: every packet, valid for a given protocol version (below v5: no
//! properties, only the reason codes the version can carry).

#![allow(dead_code)]

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use ringmq_codec::bytes::Bytes;
use ringmq_codec::*;

pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(&VERSIONS[..])
}

pub fn string() -> impl Strategy<Value = MqttString> {
    "[a-z0-9 /é€😀]{0,10}".prop_map(|s| MqttString::try_from(s).unwrap())
}

pub fn topic() -> impl Strategy<Value = TopicName> {
    "[a-z0-9é$]{1,4}(/[a-z0-9]{0,4}){0,3}".prop_map(|s| TopicName::try_from(s).unwrap())
}

pub fn filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![Just("+".to_string()), "[a-z0-9]{0,4}"];
    (
        vec(level, 1..4),
        any::<bool>(),
        option::weighted(0.2, "[a-z]{1,4}"),
    )
        .prop_map(|(levels, hash, share)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            if f.is_empty() {
                f.push('#');
            }
            if let Some(g) = share {
                f = format!("$share/{g}/{f}");
            }
            TopicFilter::try_from(f).unwrap()
        })
}

pub fn bin() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

pub fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|n| PacketId::new(n).unwrap())
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn user_props() -> impl Strategy<Value = Vec<(MqttString, MqttString)>> {
    vec((string(), string()), 0..3)
}

fn sub_id() -> impl Strategy<Value = u32> {
    prop_oneof![1..128u32, 1..=MAX_VAR_INT]
}

fn nz16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn nz32() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

/// A reason code the packet type allows (v5 table).
pub fn reason_for(packet_type: u8) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|rc| rc.is_valid_for(packet_type))
        .collect();
    prop::sample::select(codes)
}

fn connect_props() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(nz16()),
        option::of(nz32()),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of((string(), option::of(bin()))),
        user_props(),
    )
        .prop_map(|(se, rm, mps, tam, rri, rpi, auth, up)| ConnectProperties {
            session_expiry_interval: se,
            receive_maximum: rm,
            maximum_packet_size: mps,
            topic_alias_maximum: tam,
            request_response_information: rri,
            request_problem_information: rpi,
            authentication_method: auth.as_ref().map(|a| a.0.clone()),
            authentication_data: auth.and_then(|a| a.1),
            user_properties: up,
        })
}

fn will_props() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(0..=1u8),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(topic()),
        option::of(bin()),
        user_props(),
    )
        .prop_map(|(wd, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wd,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
}

pub fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let will = option::of((topic(), bin(), qos(), any::<bool>(), will_props()));
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        will,
        option::of(string()),
        option::of(bin()),
        connect_props(),
    )
        .prop_map(move |(clean, ka, cid, will, user, pass, props)| {
            let mut c = Connect {
                protocol: v,
                clean_start: clean,
                keep_alive: ka,
                client_id: cid,
                will: will.map(|(topic, payload, qos, retain, p)| LastWill {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties: if v5 { p } else { Default::default() },
                }),
                password: if v5 || user.is_some() { pass } else { None },
                username: user,
                properties: if v5 { props } else { Default::default() },
            };
            match v {
                ProtocolVersion::V3_1 if c.client_id.is_empty() => {
                    c.client_id = MqttString::from_static("c")
                }
                ProtocolVersion::V3_1_1 if c.client_id.is_empty() => c.clean_start = true,
                _ => {}
            }
            Packet::Connect(Box::new(c))
        })
}

fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    let a = (
        option::of(any::<u32>()),
        option::of(nz16()),
        option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        option::of(any::<bool>()),
        option::of(nz32()),
        option::of(string()),
        option::of(any::<u16>()),
        option::of(string()),
    );
    let b = (
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<u16>()),
        option::of(string()),
        option::of(string()),
        option::of(string()),
        option::of(bin()),
        user_props(),
    );
    (a, b).prop_map(
        |((se, rm, mq, ra, mps, aci, tam, rs), (wsa, sia, ssa, ska, ri, sr, am, ad, up))| {
            ConnAckProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_qos: mq,
                retain_available: ra,
                maximum_packet_size: mps,
                assigned_client_identifier: aci,
                topic_alias_maximum: tam,
                reason_string: rs,
                wildcard_subscription_available: wsa,
                subscription_identifiers_available: sia,
                shared_subscription_available: ssa,
                server_keep_alive: ska,
                response_information: ri,
                server_reference: sr,
                authentication_method: am,
                authentication_data: ad,
                user_properties: up,
            }
        },
    )
}

pub fn connack(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    if v.is_v5() {
        (
            any::<bool>(),
            reason_for(packet_type::CONNACK),
            connack_props(),
        )
            .prop_map(|(sp, reason, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present: sp && reason == ReasonCode::Success,
                    reason,
                    properties: properties.into(),
                })
            })
            .boxed()
    } else {
        (any::<bool>(), 0..=5u8)
            .prop_map(move |(sp, rc)| {
                let reason = ConnectReturnCode::try_from(rc).unwrap().to_reason_code();
                Packet::ConnAck(ConnAck {
                    session_present: sp && rc == 0 && v == ProtocolVersion::V3_1_1,
                    reason,
                    properties: Default::default(),
                })
            })
            .boxed()
    }
}

fn publish_props() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(0..=1u8),
        option::of(any::<u32>()),
        option::of(nz16()),
        option::of(topic()),
        option::of(bin()),
        option::of(string()),
        vec(sub_id(), 0..3),
        user_props(),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, ct, ids, up)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            content_type: ct,
            subscription_identifiers: ids.into_iter().collect(),
            user_properties: up,
        })
}

pub fn publish_with_payload(
    v: ProtocolVersion,
    payload: BoxedStrategy<Bytes>,
) -> impl Strategy<Value = Publish> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        packet_id(),
        publish_props(),
        payload,
    )
        .prop_map(
            move |(dup, qos, retain, topic, alias_only, id, props, payload)| {
                let qos0 = qos == QoS::AtMostOnce;
                let v5 = v.is_v5();
                let topic = if v5 && alias_only && props.topic_alias.is_some() {
                    TopicName::empty_for_alias()
                } else {
                    topic
                };
                Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: if qos0 { None } else { Some(id) },
                    properties: if v5 { props.into() } else { Default::default() },
                    payload,
                }
            },
        )
}

pub fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    publish_with_payload(v, vec(any::<u8>(), 0..64).prop_map(Bytes::from).boxed())
        .prop_map(Packet::Publish)
}

pub fn pubresp(v: ProtocolVersion, ty: u8) -> impl Strategy<Value = Packet> {
    let props = (option::of(string()), user_props()).prop_map(|(rs, up)| PubRespProperties {
        reason_string: rs,
        user_properties: up,
    });
    (packet_id(), reason_for(ty), props).prop_map(move |(id, reason, properties)| {
        let r = if v.is_v5() {
            PubResp {
                packet_id: id,
                reason,
                properties,
            }
        } else {
            PubResp::new(id)
        };
        match ty {
            packet_type::PUBACK => Packet::PubAck(r),
            packet_type::PUBREC => Packet::PubRec(r),
            packet_type::PUBREL => Packet::PubRel(r),
            _ => Packet::PubComp(r),
        }
    })
}

fn options(v: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| {
        if v.is_v5() {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions::with_qos(qos)
        }
    })
}

pub fn subscribe_with(
    v: ProtocolVersion,
    n: std::ops::Range<usize>,
) -> impl Strategy<Value = Subscribe> {
    let props = (option::of(sub_id()), user_props()).prop_map(|(si, up)| SubscribeProperties {
        subscription_identifier: si,
        user_properties: up,
    });
    (packet_id(), vec((filter(), options(v)), n), props).prop_map(
        move |(id, mut filters, props)| {
            for (f, o) in &mut filters {
                if f.shared().is_some() {
                    o.no_local = false;
                }
            }
            Subscribe {
                packet_id: id,
                filters,
                properties: if v.is_v5() { props } else { Default::default() },
            }
        },
    )
}

pub fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    subscribe_with(v, 1..5).prop_map(Packet::Subscribe)
}

pub fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let props = (option::of(string()), user_props()).prop_map(|(rs, up)| SubAckProperties {
        reason_string: rs,
        user_properties: up,
    });
    let v3 = prop::sample::select(vec![
        ReasonCode::GrantedQoS0,
        ReasonCode::GrantedQoS1,
        ReasonCode::GrantedQoS2,
        ReasonCode::UnspecifiedError,
    ]);
    let reasons = if v.is_v5() {
        vec(reason_for(packet_type::SUBACK).boxed(), 1..5)
    } else {
        vec(v3.boxed(), 1..5)
    };
    (packet_id(), reasons, props).prop_map(move |(id, reasons, props)| {
        Packet::SubAck(SubAck {
            packet_id: id,
            reasons,
            properties: if v.is_v5() {
                props.into()
            } else {
                Default::default()
            },
        })
    })
}

pub fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (packet_id(), vec(filter(), 1..5), user_props()).prop_map(move |(id, filters, up)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            filters,
            properties: UnsubscribeProperties {
                user_properties: if v.is_v5() { up } else { Vec::new() },
            },
        })
    })
}

pub fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let props = (option::of(string()), user_props()).prop_map(|(rs, up)| UnsubAckProperties {
        reason_string: rs,
        user_properties: up,
    });
    (
        packet_id(),
        vec(reason_for(packet_type::UNSUBACK), 1..5),
        props,
    )
        .prop_map(move |(id, reasons, props)| {
            let v5 = v.is_v5();
            Packet::UnsubAck(UnsubAck {
                packet_id: id,
                reasons: if v5 { reasons } else { Vec::new() },
                properties: if v5 { props.into() } else { Default::default() },
            })
        })
}

pub fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let props = (
        option::of(any::<u32>()),
        option::of(string()),
        option::of(string()),
        user_props(),
    )
        .prop_map(|(se, rs, sr, up)| DisconnectProperties {
            session_expiry_interval: se,
            reason_string: rs,
            server_reference: sr,
            user_properties: up,
        });
    (reason_for(packet_type::DISCONNECT), props).prop_map(move |(reason, properties)| {
        Packet::Disconnect(if v.is_v5() {
            Disconnect {
                reason,
                properties: properties.into(),
            }
        } else {
            Disconnect::default()
        })
    })
}

pub fn auth() -> impl Strategy<Value = Packet> {
    let props = (
        option::of(string()),
        option::of(bin()),
        option::of(string()),
        user_props(),
    )
        .prop_map(|(am, ad, rs, up)| AuthProperties {
            authentication_method: am,
            authentication_data: ad,
            reason_string: rs,
            user_properties: up,
        });
    (reason_for(packet_type::AUTH), props).prop_map(|(reason, properties)| {
        Packet::Auth(Auth {
            reason,
            properties: properties.into(),
        })
    })
}

/// Any packet but CONNECT, valid in `v`.
pub fn non_connect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut s = vec![
        connack(v).boxed(),
        publish(v).boxed(),
        pubresp(v, packet_type::PUBACK).boxed(),
        pubresp(v, packet_type::PUBREC).boxed(),
        pubresp(v, packet_type::PUBREL).boxed(),
        pubresp(v, packet_type::PUBCOMP).boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        s.push(auth().boxed());
    }
    prop::strategy::Union::new(s).boxed()
}

/// A packet a client sends after CONNECT, valid in `v` (no Subscription Identifier in PUBLISH,
/// [MQTT-3.3.4-6]).
pub fn from_client(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let publish = publish(v).prop_map(|mut p| {
        if let Packet::Publish(p) = &mut p {
            p.properties.subscription_identifiers.clear();
        }
        p
    });
    let mut s = vec![
        publish.boxed(),
        pubresp(v, packet_type::PUBACK).boxed(),
        pubresp(v, packet_type::PUBREC).boxed(),
        pubresp(v, packet_type::PUBREL).boxed(),
        pubresp(v, packet_type::PUBCOMP).boxed(),
        subscribe(v).boxed(),
        unsubscribe(v).boxed(),
        Just(Packet::PingReq).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        s.push(auth().boxed());
    }
    prop::strategy::Union::new(s).boxed()
}
