//! Encoding of a stored PUBLISH and of will messages: our own compact layout
//! (not the MQTT wire format: that would drag per-connection rules, topic
//! aliases and decode-side protocol checks into recovery).
//!
//! ```text
//! message  = flags u8 (qos 0-1 | retain 2) received_at_ms:var topic:bytes
//!            props payload:rest
//! props    = mask u8 (1 format | 2 expiry | 4 response topic | 8 correlation
//!                     | 16 content type | 32 user props | 64 sub ids | 128 will delay)
//!            then the present fields in bit order
//! ```
//! The topic alias is never stored: it belongs to one connection. Packet id
//! and DUP are per delivery: they live in the outbound state / inbound key.

use bytes::Bytes;
use ringmq_codec::{
    LastWill, MqttString, Publish, PublishProperties, QoS, TopicName, WillProperties,
};
use smallvec::SmallVec;

use super::enc::{BadRecord, Reader, Writer};

/// A PUBLISH as stored, with its arrival time (unix ms) so that the v5
/// Message Expiry Interval keeps counting across a restart [MQTT-3.3.2-6].
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub publish: Publish,
    /// When the broker received it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

/// A message to store, borrowed from the broker's own structures: the shared
/// PUBLISH plus this delivery's QoS, retain flag and subscription ids.
/// The publish's own QoS, retain, DUP, packet id, topic alias and
/// subscription ids are ignored.
#[derive(Clone, Copy, Debug)]
pub struct MessageRef<'a> {
    pub publish: &'a Publish,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: &'a [u32],
    /// Milliseconds since the Unix epoch (see [`super::instant_to_unix_ms`]).
    pub received_at_ms: u64,
}

impl StoredMessage {
    /// This message as a [`MessageRef`], to write it back.
    pub fn view(&self) -> MessageRef<'_> {
        MessageRef {
            publish: &self.publish,
            qos: self.publish.qos,
            retain: self.publish.retain,
            subscription_ids: &self.publish.properties.subscription_identifiers,
            received_at_ms: self.received_at_ms,
        }
    }
}

/// The v5 properties shared by PUBLISH and will messages.
#[derive(Default)]
struct Props {
    format: Option<u8>,
    expiry: Option<u32>,
    response_topic: Option<TopicName>,
    correlation: Option<Bytes>,
    content_type: Option<MqttString>,
    user: Vec<(MqttString, MqttString)>,
    sub_ids: SmallVec<[u32; 1]>,
    will_delay: Option<u32>,
}

fn qos_from(b: u8) -> Result<QoS, BadRecord> {
    QoS::try_from(b & 3).map_err(|_| BadRecord("qos"))
}

pub fn put_message(w: &mut Writer<'_>, m: MessageRef<'_>) {
    let p = m.publish;
    w.u8(m.qos as u8 | (m.retain as u8) << 2);
    w.var(m.received_at_ms);
    w.bytes(p.topic.as_str().as_bytes());
    let pp = &p.properties;
    put_props(
        w,
        pp.payload_format_indicator,
        pp.message_expiry_interval,
        pp.response_topic.as_ref(),
        pp.correlation_data.as_ref(),
        pp.content_type.as_ref(),
        &pp.user_properties,
        m.subscription_ids,
        None,
    );
    w.raw(&p.payload);
}

pub fn read_message(r: &mut Reader) -> Result<StoredMessage, BadRecord> {
    let flags = r.u8("message flags")?;
    if flags & !7 != 0 {
        return Err(BadRecord("message flags"));
    }
    let received_at_ms = r.var("received_at")?;
    let topic = TopicName::try_from(r.bytes("topic")?).map_err(|_| BadRecord("topic"))?;
    let p = read_props(r)?;
    let payload = r.rest();
    let properties = PublishProperties {
        payload_format_indicator: p.format,
        message_expiry_interval: p.expiry,
        topic_alias: None,
        response_topic: p.response_topic,
        correlation_data: p.correlation,
        content_type: p.content_type,
        subscription_identifiers: p.sub_ids,
        user_properties: p.user,
    };
    let publish = Publish {
        dup: false,
        qos: qos_from(flags)?,
        retain: flags & 0x04 != 0,
        topic,
        packet_id: None,
        properties: properties.into(),
        payload,
    };
    Ok(StoredMessage {
        publish,
        received_at_ms,
    })
}

/// `has u8` then, if 1: flags (qos | retain), topic, props, payload (length-prefixed).
pub fn put_will(w: &mut Writer<'_>, will: Option<&LastWill>) {
    let Some(will) = will else {
        w.u8(0);
        return;
    };
    w.u8(1);
    w.u8(will.qos as u8 | (will.retain as u8) << 2);
    w.bytes(will.topic.as_str().as_bytes());
    let wp = &will.properties;
    put_props(
        w,
        wp.payload_format_indicator,
        wp.message_expiry_interval,
        wp.response_topic.as_ref(),
        wp.correlation_data.as_ref(),
        wp.content_type.as_ref(),
        &wp.user_properties,
        &[],
        wp.will_delay_interval,
    );
    w.bytes(&will.payload);
}

pub fn read_will(r: &mut Reader) -> Result<Option<LastWill>, BadRecord> {
    match r.u8("will flag")? {
        0 => return Ok(None),
        1 => {}
        _ => return Err(BadRecord("will flag")),
    }
    let flags = r.u8("will flags")?;
    let topic = TopicName::try_from(r.bytes("will topic")?).map_err(|_| BadRecord("will topic"))?;
    let p = read_props(r)?;
    let payload = r.bytes("will payload")?;
    let properties = WillProperties {
        will_delay_interval: p.will_delay,
        payload_format_indicator: p.format,
        message_expiry_interval: p.expiry,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation,
        user_properties: p.user,
    };
    Ok(Some(LastWill {
        topic,
        payload,
        qos: qos_from(flags)?,
        retain: flags & 0x04 != 0,
        properties,
    }))
}

#[allow(clippy::too_many_arguments)]
fn put_props(
    w: &mut Writer<'_>,
    format: Option<u8>,
    expiry: Option<u32>,
    response_topic: Option<&TopicName>,
    correlation: Option<&Bytes>,
    content_type: Option<&MqttString>,
    user: &[(MqttString, MqttString)],
    sub_ids: &[u32],
    will_delay: Option<u32>,
) {
    let mask = format.is_some() as u8
        | (expiry.is_some() as u8) << 1
        | (response_topic.is_some() as u8) << 2
        | (correlation.is_some() as u8) << 3
        | (content_type.is_some() as u8) << 4
        | (!user.is_empty() as u8) << 5
        | (!sub_ids.is_empty() as u8) << 6
        | (will_delay.is_some() as u8) << 7;
    w.u8(mask);
    if let Some(f) = format {
        w.u8(f);
    }
    if let Some(e) = expiry {
        w.var(e.into());
    }
    if let Some(t) = response_topic {
        w.bytes(t.as_str().as_bytes());
    }
    if let Some(c) = correlation {
        w.bytes(c);
    }
    if let Some(c) = content_type {
        w.bytes(c.as_bytes());
    }
    if !user.is_empty() {
        w.var(user.len() as u64);
        for (k, v) in user {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        }
    }
    if !sub_ids.is_empty() {
        w.var(sub_ids.len() as u64);
        for &id in sub_ids {
            w.var(id.into());
        }
    }
    if let Some(d) = will_delay {
        w.var(d.into());
    }
}

fn mqtt_str(r: &mut Reader, what: &'static str) -> Result<MqttString, BadRecord> {
    MqttString::try_from(r.bytes(what)?).map_err(|_| BadRecord(what))
}

fn read_props(r: &mut Reader) -> Result<Props, BadRecord> {
    let mask = r.u8("property mask")?;
    let mut p = Props::default();
    if mask & 1 != 0 {
        p.format = Some(r.u8("payload format")?);
    }
    if mask & 2 != 0 {
        p.expiry = Some(r.var_u32("message expiry")?);
    }
    if mask & 4 != 0 {
        let t = r.bytes("response topic")?;
        p.response_topic = Some(TopicName::try_from(t).map_err(|_| BadRecord("response topic"))?);
    }
    if mask & 8 != 0 {
        p.correlation = Some(r.bytes("correlation data")?);
    }
    if mask & 16 != 0 {
        p.content_type = Some(mqtt_str(r, "content type")?);
    }
    if mask & 32 != 0 {
        let n = r.var("user property count")?;
        for _ in 0..n {
            let k = mqtt_str(r, "user property name")?;
            p.user.push((k, mqtt_str(r, "user property value")?));
        }
    }
    if mask & 64 != 0 {
        let n = r.var("subscription id count")?;
        for _ in 0..n {
            p.sub_ids.push(r.var_u32("subscription id")?);
        }
    }
    if mask & 128 != 0 {
        p.will_delay = Some(r.var_u32("will delay")?);
    }
    Ok(p)
}
