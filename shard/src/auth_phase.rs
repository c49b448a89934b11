//! Authentication of a CONNECT: one phase of the handshake, after the
//! CONNECT is read and before the socket goes to its home shard, so a
//! refused client never crosses the mesh.
//!
//! `access::authn` decides what the CONNECT needs; this file does the
//! waiting: a password check on the password pool (`access::pool`, off the
//! shard thread: the shard's other clients are served meanwhile), or the
//! SCRAM exchange over AUTH packets (v5 4.12). The CONNECT deadline bounds
//! the whole phase. Re-authentication of a served connection (AUTH 0x19) is
//! [`reauth`].

use crate::access::authn::{Authn, Identity, Start, MAX_PENDING_CHECKS};
use crate::access::scram;
use crate::conn_out::ConnOut;
use crate::connection::{protocol_close, read_connect};
use crate::net::stack::Stack;
use crate::poller::Io;
use crate::session::SessionId;
use crate::shard::Shard;
use crate::stats::{AuthOutcome, CloseReason};
use bytes::{Bytes, BytesMut};
use ringmq_codec::{
    Auth, AuthProperties, Connect, MqttString, Packet, ProtocolVersion, ReasonCode,
};
use std::net::IpAddr;
use std::rc::Rc;

/// Who the client is, as the accepting shard found: carried to the home shard.
#[derive(Default)]
pub(crate) struct Authenticated {
    /// `None`: anonymous.
    pub identity: Option<Box<Identity>>,
    /// SCRAM server-final, for the v5 CONNACK's Authentication Data.
    pub connack_data: Option<Bytes>,
}

/// A refusal: the CONNACK reason code to answer with (none when the client
/// left or the socket failed), and the close reason.
pub(crate) type Refusal = (Option<ReasonCode>, CloseReason);

/// Failures the brute-force counter hears of (not a busy shard, an
/// unsupported method or a protocol slip: those guess no password).
fn is_failed_login(o: AuthOutcome) -> bool {
    matches!(
        o,
        AuthOutcome::AnonymousRefused
            | AuthOutcome::UnknownUser
            | AuthOutcome::BadPassword
            | AuthOutcome::NoPassword
            | AuthOutcome::ScramFailed
            | AuthOutcome::ReauthFailed
    )
}

/// Counts `outcome`; a failed login also goes to the brute-force counter
/// (`access::bans`), which bans the address after too many.
fn count(shard: &Shard, outcome: AuthOutcome, peer: impl FnOnce() -> Option<IpAddr>) {
    shard.stats.auth(outcome);
    if is_failed_login(outcome) {
        if let Some(ip) = peer() {
            shard.access.bans.auth_failed(ip);
        }
    }
}

fn refuse(shard: &Shard, link: &Link<'_>, code: ReasonCode, outcome: AuthOutcome) -> Refusal {
    count(shard, outcome, || link.peer);
    (Some(code), CloseReason::ConnectRefused)
}

/// The socket of a connection being authenticated, as the handshake holds it.
pub(crate) struct Link<'a> {
    pub io: &'a Io,
    /// Its transport layers (TLS, WebSocket): AUTH packets go through them.
    pub stack: &'a mut Stack,
    pub listener: u16,
    /// The client's address (a PROXY header's, else the socket's): bans and
    /// the brute-force counter.
    pub peer: Option<IpAddr>,
    /// The listener's own `allow_anonymous` (`None`: the shard-wide one).
    pub allow_anonymous: Option<bool>,
    /// The CONNECT deadline, which bounds the whole phase.
    pub deadline: u64,
}

/// AUTH with the agreed method (v5 3.15) [MQTT-4.12.0-5].
fn auth_packet(reason: ReasonCode, method: &MqttString, data: &str) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: Some(Bytes::copy_from_slice(data.as_bytes())),
            ..AuthProperties::default()
        }
        .into(),
    })
}

/// Authenticates `c`; `buf` holds what was read after it (and keeps what
/// the exchange leaves unread). `tls_identity`: the verified client
/// certificate's CN where the listener takes it as the user name.
pub(crate) async fn authenticate(
    shard: &Rc<Shard>,
    mut link: Link<'_>,
    c: &Connect,
    buf: &mut BytesMut,
    tls_identity: Option<&str>,
) -> Result<Authenticated, Refusal> {
    // Bans first: a banned client (id, user name or address, e.g. one the
    // brute-force counter banned) costs no hashing. v5 0x8A, 3.1.1 0x05.
    if shard.access.bans.active() > 0 {
        let user = c.username.as_ref().map(|u| u.as_str());
        if let Some(b) = shard
            .access
            .bans
            .check(c.client_id.as_str(), user, link.peer)
        {
            tracing::debug!(client_id = %c.client_id.as_str(), kind = b.target.kind(), "CONNECT refused: banned");
            return Err((Some(ReasonCode::Banned), CloseReason::ConnectRefused));
        }
    }
    match shard
        .authn
        .start(c, tls_identity, link.allow_anonymous, scram::server_nonce)
    {
        Start::Accept(identity, outcome) => {
            shard.stats.auth(outcome);
            Ok(Authenticated {
                identity,
                connack_data: None,
            })
        }
        Start::Refuse(code, outcome) => Err(refuse(shard, &link, code, outcome)),
        Start::Check {
            username,
            entry,
            password,
        } => {
            let authn = &shard.authn;
            if authn.pending.get() >= MAX_PENDING_CHECKS {
                return Err(refuse(
                    shard,
                    &link,
                    ReasonCode::ServerBusy,
                    AuthOutcome::Busy,
                ));
            }
            authn.pending.set(authn.pending.get() + 1);
            let ok = if entry.is_slow() {
                crate::access::pool::run(move || entry.verify(&password)).await
            } else {
                Some(entry.verify(&password)) // $6$: one SHA-512, cheaper than a thread hop
            };
            authn.pending.set(authn.pending.get() - 1);
            if ok != Some(true) {
                return Err(refuse(
                    shard,
                    &link,
                    ReasonCode::BadUserNameOrPassword,
                    AuthOutcome::BadPassword,
                ));
            }
            shard.stats.auth(AuthOutcome::Password);
            Ok(Authenticated {
                identity: Some(Authn::checked(username)),
                connack_data: None,
            })
        }
        Start::Scram(st) => {
            let method = c
                .properties
                .authentication_method
                .clone()
                .expect("SCRAM starts from a CONNECT with a method");
            // [MQTT-4.12.0-2] more is needed: AUTH 0x18 with server-first.
            send(
                &mut link,
                &auth_packet(ReasonCode::ContinueAuthentication, &method, st.message()),
            );
            let read = read_connect(
                shard,
                link.io,
                link.stack,
                link.listener,
                std::mem::take(buf),
                Some(ProtocolVersion::V5),
                link.deadline,
            )
            .await;
            let p = match read {
                Ok((p, rest)) => {
                    *buf = rest;
                    p
                }
                Err((reason, answer)) => {
                    if let Some(a) = answer {
                        let _ = link.stack.write(link.io, &a);
                        let _ = link.stack.flush(link.io);
                    }
                    shard.stats.auth(AuthOutcome::ProtocolError);
                    return Err((None, reason));
                }
            };
            shard.stats.packets_in.inc();
            match p {
                // [MQTT-4.12.0-3] the client answers with AUTH 0x18, same method [MQTT-4.12.0-5].
                Packet::Auth(a)
                    if a.reason == ReasonCode::ContinueAuthentication
                        && a.properties.authentication_method.as_ref() == Some(&method) =>
                {
                    let data = a.properties.authentication_data.clone().unwrap_or_default();
                    match Authn::scram_final(&st, method, &data) {
                        Ok((identity, server_final)) => {
                            shard.stats.auth(AuthOutcome::Scram);
                            Ok(Authenticated {
                                identity: Some(identity),
                                connack_data: Some(Bytes::from(server_final)),
                            })
                        }
                        Err((code, outcome)) => Err(refuse(shard, &link, code, outcome)),
                    }
                }
                Packet::Disconnect(_) => {
                    shard.stats.auth(AuthOutcome::ProtocolError);
                    Err((None, CloseReason::ClientDisconnect))
                }
                // [MQTT-3.1.2-30] only AUTH or DISCONNECT before the CONNACK;
                // an AUTH with another reason or method is a Protocol Error too.
                _ => {
                    shard.stats.auth(AuthOutcome::ProtocolError);
                    Err((Some(ReasonCode::ProtocolError), CloseReason::ProtocolError))
                }
            }
        }
    }
}

fn send(link: &mut Link<'_>, p: &Packet) {
    let mut out = BytesMut::new();
    if p.encode(ProtocolVersion::V5, &mut out).is_ok() {
        // Through the transport layers (TLS, WebSocket); a fresh socket's
        // send buffer is empty: a few hundred bytes fit.
        let _ = link.stack.write(link.io, &out);
        let _ = link.stack.flush(link.io);
    }
}

/// AUTH from a served v5 client: re-authentication [MQTT-4.12.1-1]. SCRAM
/// costs no key stretching on the server, so it runs here, on the shard.
/// `Err` closes the connection (its DISCONNECT already queued).
pub(crate) fn reauth(
    shard: &Rc<Shard>,
    sid: SessionId,
    conn: &Rc<ConnOut>,
    a: Auth,
) -> Result<(), CloseReason> {
    let mut sessions = shard.sessions.borrow_mut();
    let s = &mut sessions[sid as usize];
    let Some(id) = s.identity.as_mut().filter(|i| i.method.is_some()) else {
        // [MQTT-4.12.0-7] no method at CONNECT: the client must not send AUTH.
        protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
        return Err(CloseReason::ProtocolError);
    };
    let method = id.method.clone().expect("filtered on a method");
    if a.properties.authentication_method.as_ref() != Some(&method) {
        // [MQTT-4.12.1-1] the same method as at CONNECT.
        protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
        return Err(CloseReason::ProtocolError);
    }
    let data = a.properties.authentication_data.clone().unwrap_or_default();
    let failed = |shard: &Shard| {
        count(shard, AuthOutcome::ReauthFailed, || {
            conn.peer().map(|a| a.ip())
        });
        // [MQTT-4.12.1-2] a failed re-authentication: DISCONNECT and close.
        protocol_close(conn, ReasonCode::NotAuthorized, CloseReason::NotAuthorized);
        Err(CloseReason::NotAuthorized)
    };
    match (a.reason, id.reauth.take()) {
        (ReasonCode::ReAuthenticate, None) => {
            let file = shard.authn.passwords();
            match scram::server_first(file.as_deref(), &data, &scram::server_nonce()) {
                Ok(st) if Some(&st.username) == id.username.as_ref() => {
                    conn.send(&auth_packet(
                        ReasonCode::ContinueAuthentication,
                        &method,
                        st.message(),
                    ));
                    id.reauth = Some(Box::new(st));
                    Ok(())
                }
                // Another user than the connection's, or a malformed client-first.
                _ => failed(shard),
            }
        }
        (ReasonCode::ContinueAuthentication, Some(st)) => {
            match Authn::scram_final(&st, method.clone(), &data) {
                Ok((_, server_final)) => {
                    shard.stats.auth(AuthOutcome::Reauth);
                    conn.send(&auth_packet(ReasonCode::Success, &method, &server_final));
                    Ok(())
                }
                Err(_) => failed(shard),
            }
        }
        // 0x19 during an exchange, 0x18 outside one, 0x00 from the client:
        // out of order (v5 4.12.1).
        _ => {
            shard.stats.auth(AuthOutcome::ProtocolError);
            protocol_close(conn, ReasonCode::ProtocolError, CloseReason::ProtocolError);
            Err(CloseReason::ProtocolError)
        }
    }
}
