//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, sans I/O: messages in,
//! messages out. MQTT 5 carries each message verbatim as Authentication Data
//! (Authentication Method `SCRAM-SHA-256`), as EMQX does.
//!
//! ```text
//! client-first   n,,n=user,r=CNONCE                      CONNECT / AUTH 0x19
//! server-first   r=CNONCE SNONCE,s=SALT,i=4096            AUTH 0x18
//! client-final   c=biws,r=CNONCE SNONCE,p=PROOF           AUTH 0x18
//! server-final   v=SIGNATURE                              CONNACK 0x00 / AUTH 0x00
//! ```
//!
//! No channel binding (`p=` in the GS2 header is refused, `y` accepted:
//! RFC 5802 section 6), no authzid other than the user itself. An unknown
//! user gets a salt derived from its name and a per-process secret, so the
//! exchange looks the same and fails at the proof (RFC 5802 section 9).
//! Verifying costs two HMACs and a hash: no key stretching happens here.

use super::passwd::{hmac256, random, PasswordFile, ScramKeys, SCRAM_ITERATIONS};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use subtle::ConstantTimeEq;

/// The MQTT Authentication Method of this mechanism.
pub const METHOD: &str = "SCRAM-SHA-256";

/// Why an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramError {
    /// A message does not follow RFC 5802's grammar.
    Malformed,
    /// The nonce of client-final is not the one the server sent.
    NonceMismatch,
    /// Channel binding asked for, or a different authzid.
    Unsupported,
    /// The user is not in the password file, or has no SCRAM entry.
    UnknownUser,
    /// The proof does not match.
    BadProof,
}

/// After client-first: what the server needs to check client-final.
#[derive(Clone)]
pub struct ServerFirst {
    /// The user named in client-first.
    pub username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    keys: Option<ScramKeys>,
}

impl ServerFirst {
    /// The server-first-message to send.
    pub fn message(&self) -> &str {
        &self.server_first
    }
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A printable nonce: no `,` (RFC 5802 `printable`).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// The salt an unknown user gets: stable per name within this process.
fn decoy(username: &str) -> ScramKeys {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(random::<32>);
    let salt = hmac256(secret, username.as_bytes());
    ScramKeys {
        iterations: SCRAM_ITERATIONS,
        salt: salt[..16].to_vec(),
        stored_key: [0; 32],
        server_key: [0; 32],
    }
}

/// A fresh server nonce: 18 random bytes, base64 (24 printable characters).
pub fn server_nonce() -> String {
    STANDARD.encode(random::<18>())
}

/// Handles client-first with `snonce` as the server's nonce part.
pub fn server_first(
    creds: Option<&PasswordFile>,
    client_first: &[u8],
    snonce: &str,
) -> Result<ServerFirst, ScramError> {
    let msg = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed)?;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let mut it = msg.splitn(3, ',');
    let (cbind, authz, bare) = match (it.next(), it.next(), it.next()) {
        (Some(c), Some(a), Some(b)) => (c, a, b),
        _ => return Err(ScramError::Malformed),
    };
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(ScramError::Unsupported),
        _ => return Err(ScramError::Malformed),
    }
    let mut attrs = bare.split(',');
    let user = match attrs.next() {
        Some(u) if u.starts_with("m=") => return Err(ScramError::Unsupported),
        Some(u) => u.strip_prefix("n=").ok_or(ScramError::Malformed)?,
        None => return Err(ScramError::Malformed),
    };
    let cnonce = attrs
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(ScramError::Malformed)?;
    let username = unescape(user).ok_or(ScramError::Malformed)?;
    if username.is_empty() || !valid_nonce(cnonce) || !valid_nonce(snonce) {
        return Err(ScramError::Malformed);
    }
    if !authz.is_empty() {
        let a = authz.strip_prefix("a=").ok_or(ScramError::Malformed)?;
        if unescape(a).as_deref() != Some(username.as_str()) {
            return Err(ScramError::Unsupported);
        }
    }
    let keys = creds.and_then(|c| match c.get(&username) {
        Some(super::passwd::Entry::Scram(k)) => Some(k.clone()),
        _ => None,
    });
    let shown = keys.clone().unwrap_or_else(|| decoy(&username));
    let nonce = format!("{cnonce}{snonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(&shown.salt),
        shown.iterations
    );
    Ok(ServerFirst {
        username,
        gs2_header: format!("{cbind},{authz},"),
        client_first_bare: bare.to_string(),
        server_first,
        nonce,
        keys,
    })
}

/// Handles client-final: the server-final-message when the proof is right.
pub fn server_final(state: &ServerFirst, client_final: &[u8]) -> Result<String, ScramError> {
    let msg = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed)?;
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|c| c.strip_prefix("c="))
        .ok_or(ScramError::Malformed)?;
    let nonce = attrs
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(ScramError::Malformed)?;
    let cbind = STANDARD.decode(cbind).map_err(|_| ScramError::Malformed)?;
    if cbind != state.gs2_header.as_bytes() {
        // Without channel binding, c= is the base64 of the GS2 header (RFC 5802 section 7).
        return Err(ScramError::Malformed);
    }
    if nonce != state.nonce {
        return Err(ScramError::NonceMismatch);
    }
    let proof = STANDARD.decode(proof).map_err(|_| ScramError::Malformed)?;
    let Some(keys) = &state.keys else {
        return Err(ScramError::UnknownUser);
    };
    if proof.len() != 32 {
        return Err(ScramError::BadProof);
    }
    let auth_message = format!(
        "{},{},{}",
        state.client_first_bare, state.server_first, without_proof
    );
    let signature = hmac256(&keys.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    let stored: [u8; 32] = Sha256::digest(&client_key).into();
    if !bool::from(stored.ct_eq(&keys.stored_key)) {
        return Err(ScramError::BadProof);
    }
    let server_sig = hmac256(&keys.server_key, auth_message.as_bytes());
    Ok(format!("v={}", STANDARD.encode(server_sig)))
}

/// The client side, for tests and tools: RFC 5802 section 3's computations.
pub mod client {
    use super::*;
    use crate::access::passwd::salted_password;

    /// `n,,n=USER,r=CNONCE` (the user must not need escaping).
    pub fn first(user: &str, cnonce: &str) -> String {
        format!("n,,n={user},r={cnonce}")
    }

    /// client-final for `server_first`, and the server signature to expect.
    pub fn last(
        user: &str,
        password: &str,
        cnonce: &str,
        server_first: &str,
    ) -> Option<(String, String)> {
        let mut nonce = None;
        let mut salt = None;
        let mut iter = None;
        for a in server_first.split(',') {
            match a.split_at_checked(2)? {
                ("r=", v) => nonce = Some(v),
                ("s=", v) => salt = STANDARD.decode(v).ok(),
                ("i=", v) => iter = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (nonce, salt, iter) = (nonce?, salt?, iter?);
        let salted = salted_password(password.as_bytes(), &salt, iter);
        let client_key = hmac256(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("n={user},r={cnonce},{server_first},{without_proof}");
        let sig = hmac256(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        let server_key = hmac256(&salted, b"Server Key");
        let server_sig = hmac256(&server_key, auth.as_bytes());
        Some((
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            format!("v={}", STANDARD.encode(server_sig)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::passwd::Entry;
    use std::path::Path;

    fn file_with(user: &str, salt_b64: &str, password: &str) -> PasswordFile {
        let salt = STANDARD.decode(salt_b64).unwrap();
        let e = Entry::Scram(ScramKeys::derive(password.as_bytes(), &salt, 4096));
        PasswordFile::parse(Path::new("t"), &format!("{user}:{e}\n")).unwrap()
    }

    /// RFC 7677 section 3, byte for byte.
    #[test]
    fn rfc7677_test_vector() {
        let f = file_with("user", "W22ZaJ0SNY7soEsUEjb6gQ==", "pencil");
        let st = server_first(
            Some(&f),
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            st.message(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let fin = server_final(
            &st,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
        assert_eq!(fin, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // The client helper computes the same proof.
        let (last, expect) =
            client::last("user", "pencil", "rOprNGfwEbeRWgbNEkqO", st.message()).unwrap();
        assert!(last.ends_with("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
        assert_eq!(expect, fin);
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_at_the_proof() {
        let f = file_with("user", "W22ZaJ0SNY7soEsUEjb6gQ==", "pencil");
        let st = server_first(Some(&f), client::first("user", "abc").as_bytes(), "xyz").unwrap();
        let (last, _) = client::last("user", "pen", "abc", st.message()).unwrap();
        assert_eq!(
            server_final(&st, last.as_bytes()),
            Err(ScramError::BadProof)
        );
        // Unknown user: same shape of answer, a stable decoy salt.
        let a = server_first(Some(&f), client::first("nobody", "abc").as_bytes(), "xyz").unwrap();
        let b = server_first(Some(&f), client::first("nobody", "abc").as_bytes(), "xyz").unwrap();
        assert_eq!(a.message(), b.message());
        assert!(a.message().ends_with(",i=4096"));
        let (last, _) = client::last("nobody", "x", "abc", a.message()).unwrap();
        assert_eq!(
            server_final(&a, last.as_bytes()),
            Err(ScramError::UnknownUser)
        );
    }

    #[test]
    fn grammar() {
        let f = file_with("a,b", "W22ZaJ0SNY7soEsUEjb6gQ==", "p");
        let bad = |m: &str| server_first(Some(&f), m.as_bytes(), "s").err();
        assert_eq!(bad("p=tls-unique,,n=u,r=x"), Some(ScramError::Unsupported));
        assert_eq!(bad("n,,m=ext,n=u,r=x"), Some(ScramError::Unsupported));
        assert_eq!(bad("n,a=other,n=u,r=x"), Some(ScramError::Unsupported));
        assert_eq!(bad("x,,n=u,r=x"), Some(ScramError::Malformed));
        assert_eq!(bad("n,,n=u"), Some(ScramError::Malformed));
        assert_eq!(bad("n,,n=u=2X,r=x"), Some(ScramError::Malformed));
        assert_eq!(bad("n,,r=x,n=u"), Some(ScramError::Malformed));
        // Escaped names: "a,b" is n=a=2Cb.
        let st = server_first(Some(&f), b"n,a=a=2Cb,n=a=2Cb,r=x", "s").unwrap();
        assert_eq!(st.username, "a,b");
        // Nonce changed by the client.
        let st = server_first(Some(&f), b"n,,n=a=2Cb,r=x", "s").unwrap();
        assert_eq!(
            server_final(&st, b"c=biws,r=xt,p=AAAA"),
            Err(ScramError::NonceMismatch)
        );
        // c= must be base64("n,,").
        assert_eq!(
            server_final(&st, b"c=eSws,r=xs,p=AAAA"),
            Err(ScramError::Malformed)
        );
    }
}
