//! Authentication decisions: who may connect, as whom.
//!
//! Sans I/O. The CONNECT phase (`crate::auth_phase`) asks [`Authn::start`]
//! what a CONNECT needs: nothing (anonymous allowed, or refused outright), a
//! password check (slow on purpose: it runs on [`super::pool`], off the
//! shard thread), or a SCRAM exchange (`super::scram`, cheap: no key
//! stretching on the server). "Anonymous" is Mosquitto's meaning: a CONNECT
//! without a user name.
//!
//! The password file is held as an `Arc` per shard and swapped whole on
//! reload ([`Authn::set_passwords`]): reading it costs one `RefCell` borrow
//! and an `Arc` clone per CONNECT, no lock.

use super::passwd::{Entry, PasswordFile};
use super::scram::{self, ScramError, ServerFirst};
use crate::stats::AuthOutcome;
use ringmq_codec::{Connect, MqttString, ReasonCode};
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::Arc;

/// Authentication settings (from `--allow-anonymous`, `--password-file`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthnConfig {
    /// A CONNECT without a user name is accepted.
    pub allow_anonymous: bool,
    /// Mosquitto-format password file; `None`: no user can log in with a password.
    pub password_file: Option<PathBuf>,
}

/// Password checks waiting for or running on the pool, per shard, beyond
/// which a CONNECT is refused as Server busy (a wrong-password storm queues
/// at most this many).
pub const MAX_PENDING_CHECKS: usize = 256;

/// Who a connection authenticated as, kept with its session (boxed: an
/// anonymous connection holds nothing).
#[derive(Clone, Default)]
pub struct Identity {
    /// The user name the password file vouched for (or the CONNECT's, when
    /// anonymous clients are allowed and no password was checked: `verified` false).
    pub username: Option<String>,
    /// The password or SCRAM proof was checked.
    pub verified: bool,
    /// The v5 Authentication Method agreed at CONNECT (re-authentication uses it).
    pub method: Option<MqttString>,
    /// A re-authentication under way (after AUTH 0x19).
    pub reauth: Option<Box<ServerFirst>>,
}

/// What a CONNECT needs before it can be answered.
pub enum Start {
    /// Accepted as this identity (`None`: anonymous).
    Accept(Option<Box<Identity>>, AuthOutcome),
    /// Refused with this reason code.
    Refuse(ReasonCode, AuthOutcome),
    /// Check `password` against `entry` off the shard thread.
    Check {
        username: String,
        entry: Entry,
        password: Vec<u8>,
    },
    /// SCRAM: send server-first (AUTH 0x18), then check client-final.
    Scram(Box<ServerFirst>),
}

/// A shard's authentication state: policy and the current password file.
pub struct Authn {
    cfg: AuthnConfig,
    passwords: RefCell<Option<Arc<PasswordFile>>>,
    /// Password checks this shard has on the pool.
    pub pending: Cell<usize>,
}

impl Authn {
    /// `passwords`: the file loaded at start (`None` when not configured).
    pub fn new(cfg: AuthnConfig, passwords: Option<Arc<PasswordFile>>) -> Authn {
        Authn {
            cfg,
            passwords: RefCell::new(passwords),
            pending: Cell::new(0),
        }
    }

    /// Replaces the password file (reload); connections already accepted stay.
    pub fn set_passwords(&self, p: Option<Arc<PasswordFile>>) {
        *self.passwords.borrow_mut() = p;
    }

    /// The current password file.
    pub fn passwords(&self) -> Option<Arc<PasswordFile>> {
        self.passwords.borrow().clone()
    }

    /// What `c` needs. `tls_identity`: the verified client certificate's
    /// CN on a listener with `identity_as_username` (Mosquitto's
    /// `use_identity_as_username`): it is the user name and no password is
    /// asked. `anonymous`: the listener's own `allow_anonymous`, if it has
    /// one (else the shard-wide setting). `snonce`: the server nonce, if
    /// SCRAM is asked for.
    pub fn start(
        &self,
        c: &Connect,
        tls_identity: Option<&str>,
        anonymous: Option<bool>,
        snonce: impl FnOnce() -> String,
    ) -> Start {
        let allow_anonymous = anonymous.unwrap_or(self.cfg.allow_anonymous);
        if let Some(cn) = tls_identity {
            let id = Identity {
                username: Some(cn.to_string()),
                verified: true,
                ..Identity::default()
            };
            return Start::Accept(Some(Box::new(id)), AuthOutcome::TlsIdentity);
        }
        let file = self.passwords();
        if let Some(method) = &c.properties.authentication_method {
            if method.as_str() != scram::METHOD || file.is_none() {
                // [MQTT-4.12.0-1] an unsupported method: CONNACK 0x8C and close.
                return Start::Refuse(ReasonCode::BadAuthenticationMethod, AuthOutcome::BadMethod);
            }
            let Some(data) = &c.properties.authentication_data else {
                // SCRAM starts with client-first: without it there is nothing to answer.
                return Start::Refuse(ReasonCode::NotAuthorized, AuthOutcome::ScramFailed);
            };
            return match scram::server_first(file.as_deref(), data, &snonce()) {
                Ok(st) => {
                    if c.username
                        .as_ref()
                        .is_some_and(|u| u.as_str() != st.username)
                    {
                        // The CONNECT names another user than the SCRAM exchange.
                        return Start::Refuse(ReasonCode::NotAuthorized, AuthOutcome::ScramFailed);
                    }
                    Start::Scram(Box::new(st))
                }
                Err(_) => Start::Refuse(ReasonCode::NotAuthorized, AuthOutcome::ScramFailed),
            };
        }
        let Some(user) = &c.username else {
            return if allow_anonymous {
                Start::Accept(None, AuthOutcome::Anonymous)
            } else {
                Start::Refuse(ReasonCode::NotAuthorized, AuthOutcome::AnonymousRefused)
            };
        };
        let Some(file) = file else {
            // A user name but nothing to check it against: allowed only
            // where anonymous clients are (the name is then unverified).
            return if allow_anonymous {
                let id = Identity {
                    username: Some(user.as_str().to_string()),
                    ..Identity::default()
                };
                Start::Accept(Some(Box::new(id)), AuthOutcome::Anonymous)
            } else {
                Start::Refuse(ReasonCode::NotAuthorized, AuthOutcome::AnonymousRefused)
            };
        };
        let Some(entry) = file.get(user.as_str()) else {
            return Start::Refuse(ReasonCode::BadUserNameOrPassword, AuthOutcome::UnknownUser);
        };
        let Some(password) = &c.password else {
            return Start::Refuse(ReasonCode::BadUserNameOrPassword, AuthOutcome::NoPassword);
        };
        Start::Check {
            username: user.as_str().to_string(),
            entry: entry.clone(),
            password: password.to_vec(),
        }
    }

    /// The identity of a successful password check.
    pub fn checked(username: String) -> Box<Identity> {
        Box::new(Identity {
            username: Some(username),
            verified: true,
            ..Identity::default()
        })
    }

    /// client-final of an exchange started by [`Start::Scram`]: the identity
    /// and server-final, or the refusal.
    pub fn scram_final(
        st: &ServerFirst,
        method: MqttString,
        client_final: &[u8],
    ) -> Result<(Box<Identity>, String), (ReasonCode, AuthOutcome)> {
        match scram::server_final(st, client_final) {
            Ok(server_final) => {
                let id = Identity {
                    username: Some(st.username.clone()),
                    verified: true,
                    method: Some(method),
                    reauth: None,
                };
                Ok((Box::new(id), server_final))
            }
            Err(ScramError::UnknownUser) => {
                Err((ReasonCode::NotAuthorized, AuthOutcome::UnknownUser))
            }
            Err(ScramError::BadProof) => Err((ReasonCode::NotAuthorized, AuthOutcome::BadPassword)),
            Err(_) => Err((ReasonCode::NotAuthorized, AuthOutcome::ScramFailed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringmq_codec::ProtocolVersion;
    use std::path::Path;

    fn connect(user: Option<&str>, pw: Option<&str>) -> Connect {
        Connect {
            protocol: ProtocolVersion::V5,
            username: user.map(|u| MqttString::try_from(u).unwrap()),
            password: pw.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            ..Connect::default()
        }
    }

    fn authn(allow_anonymous: bool, with_file: bool) -> Authn {
        let file = with_file.then(|| {
            let e = Entry::new_pbkdf2(b"pw", 101);
            Arc::new(PasswordFile::parse(Path::new("t"), &format!("alice:{e}\n")).unwrap())
        });
        let cfg = AuthnConfig {
            allow_anonymous,
            password_file: None,
        };
        Authn::new(cfg, file)
    }

    fn outcome(s: &Start) -> (Option<ReasonCode>, Option<AuthOutcome>) {
        match s {
            Start::Accept(_, o) => (None, Some(*o)),
            Start::Refuse(r, o) => (Some(*r), Some(*o)),
            Start::Check { .. } | Start::Scram(_) => (None, None),
        }
    }

    #[test]
    fn decisions() {
        let nonce = || "n".to_string();
        let a = authn(false, true);
        let anon = a.start(&connect(None, None), None, None, nonce);
        assert_eq!(
            outcome(&anon),
            (
                Some(ReasonCode::NotAuthorized),
                Some(AuthOutcome::AnonymousRefused)
            )
        );
        let unknown = a.start(&connect(Some("bob"), Some("pw")), None, None, nonce);
        assert_eq!(outcome(&unknown).0, Some(ReasonCode::BadUserNameOrPassword));
        let nopw = a.start(&connect(Some("alice"), None), None, None, nonce);
        assert_eq!(
            outcome(&nopw),
            (
                Some(ReasonCode::BadUserNameOrPassword),
                Some(AuthOutcome::NoPassword)
            )
        );
        match a.start(&connect(Some("alice"), Some("pw")), None, None, nonce) {
            Start::Check {
                entry, password, ..
            } => assert!(entry.verify(&password)),
            _ => panic!("a password check"),
        }
        // No password file, anonymous refused: a user name alone is not enough.
        let b = authn(false, false);
        let s = b.start(&connect(Some("alice"), Some("pw")), None, None, nonce);
        assert_eq!(outcome(&s).0, Some(ReasonCode::NotAuthorized));
        // Anonymous allowed: no user name gets in; a user name is still checked.
        let c = authn(true, true);
        assert_eq!(
            outcome(&c.start(&connect(None, None), None, None, nonce)),
            (None, Some(AuthOutcome::Anonymous))
        );
        assert!(matches!(
            c.start(&connect(Some("alice"), Some("x")), None, None, nonce),
            Start::Check { .. }
        ));
    }

    #[test]
    fn a_listener_setting_overrides_the_shard_wide_one() {
        let nonce = || "n".to_string();
        let refused = (
            Some(ReasonCode::NotAuthorized),
            Some(AuthOutcome::AnonymousRefused),
        );
        let allowed = (None, Some(AuthOutcome::Anonymous));
        let (strict, lax) = (authn(false, true), authn(true, true));
        let anon = connect(None, None);
        assert_eq!(
            outcome(&strict.start(&anon, None, Some(true), nonce)),
            allowed
        );
        assert_eq!(outcome(&strict.start(&anon, None, None, nonce)), refused);
        assert_eq!(
            outcome(&lax.start(&anon, None, Some(false), nonce)),
            refused
        );
        assert_eq!(outcome(&lax.start(&anon, None, None, nonce)), allowed);
        // A user name without a password file: as anonymous, per listener.
        let nofile = authn(false, false);
        let user = connect(Some("alice"), Some("pw"));
        assert_eq!(
            outcome(&nofile.start(&user, None, Some(true), nonce)),
            allowed
        );
        assert_eq!(outcome(&nofile.start(&user, None, None, nonce)), refused);
    }

    #[test]
    fn tls_identity_is_the_user_and_no_password_is_asked() {
        let a = authn(false, true);
        match a.start(&connect(None, None), Some("device-7"), None, || "n".into()) {
            Start::Accept(Some(id), AuthOutcome::TlsIdentity) => {
                assert_eq!(id.username.as_deref(), Some("device-7"));
                assert!(id.verified);
            }
            _ => panic!("accepted as the certificate's CN"),
        }
        // Whatever the CONNECT says.
        let s = a.start(
            &connect(Some("alice"), Some("wrong")),
            Some("device-7"),
            None,
            || "n".into(),
        );
        assert!(
            matches!(s, Start::Accept(Some(ref id), _) if id.username.as_deref() == Some("device-7"))
        );
    }
}
