//! `ringmq passwd`: adds, updates and deletes users of a password file,
//! like `mosquitto_passwd`.
//!
//! ```text
//! ringmq passwd [-c] FILE USER              prompts twice, without echo
//! ringmq passwd [-c] -b FILE USER PASSWORD  batch
//! ringmq passwd -D FILE USER                delete
//! ringmq passwd --scram [-c] [-b] FILE USER [PASSWORD]   SCRAM-SHA-256 entry
//! ```
//!
//! Entries are argon2id by default; `--scram` writes SCRAM-SHA-256 verifiers
//! (salt, iterations, StoredKey, ServerKey), which also serve plain CONNECT
//! passwords. Other lines (Mosquitto's entries, comments) are kept as they
//! are. The file is written atomically: a temporary file with mode 0600 in
//! the same directory, synced, then renamed over the old one.

use ringmq_shard::access::passwd::{Entry, PasswordFile, SCRAM_ITERATIONS};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `ringmq passwd` arguments.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// Create the file (overwrites an existing one)
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,
    /// Batch: the password is the third argument
    #[arg(short = 'b', conflicts_with = "delete")]
    pub batch: bool,
    /// Delete USER
    #[arg(short = 'D')]
    pub delete: bool,
    /// Write a SCRAM-SHA-256 entry (for MQTT 5 enhanced authentication; serves plain passwords too)
    #[arg(long)]
    pub scram: bool,
    /// PBKDF2 iterations of a SCRAM entry
    #[arg(long, value_name = "N", default_value_t = SCRAM_ITERATIONS, requires = "scram")]
    pub iterations: u32,
    /// The password file
    pub file: PathBuf,
    /// The user name
    pub user: String,
    /// The password (only with -b)
    pub password: Option<String>,
}

/// Runs the command; the error is one line.
pub fn run(a: &PasswdArgs) -> Result<(), String> {
    check_user(&a.user)?;
    if a.password.is_some() && !a.batch {
        return Err("a password argument needs -b (or leave it out to be prompted)".into());
    }
    if !(4096..=10_000_000).contains(&a.iterations) {
        return Err(format!(
            "--iterations {}: must be in 4096..=10000000 (RFC 7677)",
            a.iterations
        ));
    }
    let lines = if a.create {
        Vec::new()
    } else {
        let text = std::fs::read_to_string(&a.file)
            .map_err(|e| format!("{}: {e} (use -c to create it)", a.file.display()))?;
        // Refuse to rewrite a file the broker could not read.
        PasswordFile::parse(&a.file, &text).map_err(|e| e.to_string())?;
        text.lines().map(str::to_string).collect()
    };
    let mut lines: Vec<String> = lines;
    let at = lines
        .iter()
        .position(|l| l.split_once(':').is_some_and(|(u, _)| u == a.user));
    if a.delete {
        let Some(i) = at else {
            return Err(format!("user {} is not in {}", a.user, a.file.display()));
        };
        lines.remove(i);
    } else {
        let password = match (&a.password, a.batch) {
            (Some(p), true) => p.clone(),
            (None, true) => return Err("-b needs the password as third argument".into()),
            _ => prompt()?,
        };
        let entry = if a.scram {
            Entry::new_scram(password.as_bytes(), a.iterations)
        } else {
            Entry::new_argon2id(password.as_bytes())
        };
        let line = format!("{}:{entry}", a.user);
        match at {
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_atomically(&a.file, text.as_bytes()).map_err(|e| format!("{}: {e}", a.file.display()))
}

/// Mosquitto's rules: not empty, no `:` (the separator), no control characters.
fn check_user(u: &str) -> Result<(), String> {
    if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) || u.len() > 65_535 {
        return Err(format!(
            "user name \"{u}\" is invalid (not empty, no ':' or control characters)"
        ));
    }
    Ok(())
}

/// Asks twice, without echo (the terminal's, through `rpassword`).
fn prompt() -> Result<String, String> {
    let p1 = rpassword::prompt_password("Password: ").map_err(|e| format!("password: {e}"))?;
    let p2 =
        rpassword::prompt_password("Reenter password: ").map_err(|e| format!("password: {e}"))?;
    if p1 != p2 {
        return Err("passwords do not match".into());
    }
    if p1.is_empty() {
        return Err("empty password".into());
    }
    Ok(p1)
}

/// Temp file (mode 0600) in the same directory, synced, renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "passwd".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself durable: sync the directory.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
