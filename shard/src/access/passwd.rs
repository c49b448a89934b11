//! The password file: Mosquitto's `user:hash` lines, read unchanged, plus
//! ringmq's own argon2id and SCRAM entries.
//!
//! | prefix | written by | check |
//! |---|---|---|
//! | `$6$SALT$HASH` | Mosquitto 1.x, `mosquitto_passwd -H sha512` | SHA-512(password ‖ salt) |
//! | `$7$ITER$SALT$HASH` | Mosquitto 2.x `mosquitto_passwd` | PBKDF2-HMAC-SHA512, 64 bytes |
//! | `$argon2id$v=19$...` | `ringmq passwd` (default) | argon2id, PHC string |
//! | `$scram-sha-256$ITER$SALT$STOREDKEY$SERVERKEY` | `ringmq passwd --scram` | RFC 5802 verifiers; also plain passwords |
//!
//! Salts and hashes are standard base64 (Mosquitto pads; unpadded is read
//! too). Every comparison of secret-derived bytes is constant time
//! (`subtle`). Blank lines and lines starting with `#` are skipped; any other
//! line that does not parse is an error naming the file and the line.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations above this are refused as a typo (or a file meant to stall us).
const MAX_ITERATIONS: u32 = 10_000_000;
/// SCRAM iterations `ringmq passwd --scram` writes (RFC 7677 recommends at least 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A password file that failed to parse: file, line, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdError {
    pub file: PathBuf,
    /// 1-based; 0 when the file itself could not be read.
    pub line: usize,
    pub what: String,
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "password file {}: {}", self.file.display(), self.what)
        } else {
            write!(
                f,
                "password file {} line {}: {}",
                self.file.display(),
                self.line,
                self.what
            )
        }
    }
}

impl std::error::Error for PasswdError {}

/// SCRAM-SHA-256 verifiers (RFC 5802 section 3): the server never holds the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramKeys {
    /// The verifiers of `password` with `salt` and `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac256(&salted, b"Client Key");
        ScramKeys {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac256(&salted, b"Server Key"),
        }
    }
}

/// RFC 5802 `Hi(password, salt, i)`: PBKDF2-HMAC-SHA-256, 32 bytes.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// HMAC-SHA-256.
pub fn hmac256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// One user's stored credential.
#[derive(Clone)]
pub enum Entry {
    /// Mosquitto 1.x `$6$`: SHA-512 over password then salt.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// Mosquitto 2.x `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// argon2id PHC string (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`).
    Argon2(String),
    /// SCRAM-SHA-256 verifiers.
    Scram(ScramKeys),
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entry::Sha512 { .. } => "Entry::Sha512",
            Entry::Pbkdf2 { .. } => "Entry::Pbkdf2",
            Entry::Argon2(_) => "Entry::Argon2",
            Entry::Scram(_) => "Entry::Scram",
        })
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

fn iterations(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_ITERATIONS).contains(&n) => Ok(n),
        _ => Err(format!("iterations \"{s}\" not in 1..={MAX_ITERATIONS}")),
    }
}

impl Entry {
    /// Parses the part after `user:`.
    pub fn parse(hash: &str) -> Result<Entry, String> {
        let parts: Vec<&str> = hash.split('$').collect();
        let bad = |what: &str| Err(format!("{what} is not valid base64"));
        match parts.as_slice() {
            ["", "6", salt, hash] => {
                let (Some(salt), Some(hash)) = (b64(salt), b64(hash)) else {
                    return bad("$6$ salt or hash");
                };
                if hash.len() != 64 {
                    return Err("$6$ hash is not 64 bytes (SHA-512)".into());
                }
                Ok(Entry::Sha512 { salt, hash })
            }
            ["", "7", iter, salt, hash] => {
                let iterations = iterations(iter)?;
                let (Some(salt), Some(hash)) = (b64(salt), b64(hash)) else {
                    return bad("$7$ salt or hash");
                };
                if hash.len() != 64 {
                    return Err("$7$ hash is not 64 bytes (PBKDF2-SHA512)".into());
                }
                Ok(Entry::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                })
            }
            ["", "argon2id", ..] => {
                argon2::PasswordHash::new(hash).map_err(|e| format!("argon2id entry: {e}"))?;
                Ok(Entry::Argon2(hash.to_string()))
            }
            ["", "scram-sha-256", iter, salt, stored, server] => {
                let iterations = iterations(iter)?;
                let (Some(salt), Some(stored), Some(server)) =
                    (b64(salt), b64(stored), b64(server))
                else {
                    return bad("SCRAM salt or key");
                };
                let (Ok(stored_key), Ok(server_key)) = (stored.try_into(), server.try_into())
                else {
                    return Err("SCRAM StoredKey and ServerKey must be 32 bytes".into());
                };
                Ok(Entry::Scram(ScramKeys {
                    iterations,
                    salt,
                    stored_key,
                    server_key,
                }))
            }
            ["", kind, ..] => Err(format!("unknown hash type \"${kind}$\"")),
            _ => Err("not a hashed password (plain text passwords are refused; \
                 hash them with `ringmq passwd` or `mosquitto_passwd -U`)"
                .into()),
        }
    }

    /// Whether `password` matches. Slow on purpose for `$7$`, argon2id and
    /// SCRAM (key stretching): call it off the shard thread.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Entry::Sha512 { salt, hash } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().as_slice().ct_eq(hash).into()
            }
            Entry::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out.as_slice().ct_eq(hash).into()
            }
            Entry::Argon2(phc) => {
                use argon2::PasswordVerifier;
                let Ok(parsed) = argon2::PasswordHash::new(phc) else {
                    return false;
                };
                argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok()
            }
            Entry::Scram(k) => {
                let derived = ScramKeys::derive(password, &k.salt, k.iterations);
                derived.stored_key.ct_eq(&k.stored_key).into()
            }
        }
    }

    /// Whether checking a password costs key stretching (worth a thread hop).
    pub fn is_slow(&self) -> bool {
        !matches!(self, Entry::Sha512 { .. })
    }

    /// A new argon2id entry (RustCrypto defaults: m=19456 KiB, t=2, p=1, as OWASP advises).
    pub fn new_argon2id(password: &[u8]) -> Entry {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(&random::<16>()).expect("16 bytes is a valid salt");
        let phc = argon2::Argon2::default()
            .hash_password(password, &salt)
            .expect("argon2 defaults accept any password")
            .to_string();
        Entry::Argon2(phc)
    }

    /// A new SCRAM-SHA-256 entry with a random 16-byte salt.
    pub fn new_scram(password: &[u8], iterations: u32) -> Entry {
        Entry::Scram(ScramKeys::derive(password, &random::<16>(), iterations))
    }

    /// A new Mosquitto 2.x `$7$` entry (PBKDF2-SHA512, 12-byte salt as Mosquitto writes).
    pub fn new_pbkdf2(password: &[u8], iterations: u32) -> Entry {
        let salt = random::<12>().to_vec();
        let mut hash = vec![0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        Entry::Pbkdf2 {
            iterations,
            salt,
            hash,
        }
    }
}

impl fmt::Display for Entry {
    /// The text after `user:`, as [`Entry::parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            Entry::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            Entry::Argon2(phc) => f.write_str(phc),
            Entry::Scram(k) => write!(
                f,
                "$scram-sha-256${}${}${}${}",
                k.iterations,
                STANDARD.encode(&k.salt),
                STANDARD.encode(k.stored_key),
                STANDARD.encode(k.server_key)
            ),
        }
    }
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    b
}

/// A parsed password file: user name to credential.
#[derive(Clone, Debug, Default)]
pub struct PasswordFile {
    pub path: PathBuf,
    users: HashMap<String, Entry>,
}

impl PasswordFile {
    /// Reads and parses `path`; the error names the file and line.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|e| PasswdError {
            file: path.to_path_buf(),
            line: 0,
            what: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<PasswordFile, PasswdError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |what: String| PasswdError {
                file: path.to_path_buf(),
                line: i + 1,
                what,
            };
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(err("expected USER:HASH".into()));
            };
            if user.is_empty() {
                return Err(err("empty user name".into()));
            }
            let entry =
                Entry::parse(hash.trim_end()).map_err(|w| err(format!("user {user}: {w}")))?;
            if users.insert(user.to_string(), entry).is_some() {
                return Err(err(format!("user {user} listed twice")));
            }
        }
        Ok(PasswordFile {
            path: path.to_path_buf(),
            users,
        })
    }

    /// The credential of `user`, if listed.
    pub fn get(&self, user: &str) -> Option<&Entry> {
        self.users.get(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Debian's mosquitto_passwd 2.0.11:
    // `mosquitto_passwd -c -b f alice secret` and `-H sha512 -b f bob hunter2`.
    const SEVEN: &str = "$7$101$gkQmSOvyxOlacyjc$uwmx+YPCC/gf6RQXa+cdKTpdO8eu0ZO/zCc10KEb3Q7XD12oRDi6A2vnTZGMAe8gITdFiiWaBCSOYsvlXZTukA==";
    const SIX: &str = "$6$IFkyTixPbdfbFvE3$0WyRs+Ees1fRdLmcUm4ZGtOnmSXlRrvhz3oL2Pc9z2pLj/FIK3D3seXKQxdXfT7BzJUP1SgU2NCLV4H5uW7KbQ==";

    #[test]
    fn mosquitto_entries_verify() {
        let seven = Entry::parse(SEVEN).unwrap();
        assert!(seven.verify(b"secret"));
        assert!(!seven.verify(b"secreT"));
        let six = Entry::parse(SIX).unwrap();
        assert!(six.verify(b"hunter2"));
        assert!(!six.verify(b"hunter3"));
        // Round trip of the text form.
        assert_eq!(seven.to_string(), SEVEN);
        assert_eq!(six.to_string(), SIX);
    }

    #[test]
    fn own_entries_verify_and_round_trip() {
        for e in [
            Entry::new_argon2id(b"pw"),
            Entry::new_scram(b"pw", 4096),
            Entry::new_pbkdf2(b"pw", 101),
        ] {
            assert!(e.verify(b"pw"), "{e:?}");
            assert!(!e.verify(b"px"), "{e:?}");
            let again = Entry::parse(&e.to_string()).unwrap();
            assert!(again.verify(b"pw"));
            assert_eq!(again.to_string(), e.to_string());
        }
    }

    #[test]
    fn rfc7677_keys() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let k = ScramKeys::derive(b"pencil", &salt, 4096);
        let e = Entry::Scram(k);
        assert!(e.verify(b"pencil"));
    }

    #[test]
    fn errors_name_the_line() {
        let p = Path::new("pw");
        let text = format!("# users\n\nalice:{SEVEN}\nbob:plain\n");
        let e = PasswordFile::parse(p, &text).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(
            e.to_string()
                .starts_with("password file pw line 4: user bob"),
            "{e}"
        );
        let e = PasswordFile::parse(p, "nocolon\n").unwrap_err();
        assert_eq!((e.line, e.what.as_str()), (1, "expected USER:HASH"));
        let e = PasswordFile::parse(p, &format!("a:{SIX}\na:{SIX}\n")).unwrap_err();
        assert_eq!(e.line, 2);
        let e = PasswordFile::parse(p, "a:$7$0$AAAA$AAAA\n").unwrap_err();
        assert!(e.what.contains("iterations"), "{e}");
        let e = PasswordFile::parse(p, "a:$5$x$y\n").unwrap_err();
        assert!(e.what.contains("unknown hash type"), "{e}");
        let f = PasswordFile::parse(p, &format!("a:{SIX}\nb:{SEVEN}\n")).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.get("a").is_some() && f.get("c").is_none());
    }
}
