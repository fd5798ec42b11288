//! The first five minutes: on the embedded default (no `DATABASE_URL`) with
//! no `SYNCBRIDGE_ADMIN_TOKEN`, `serve` generates an admin token once and
//! keeps it in the data directory (`admin-token`, mode 0600), so a new user
//! has a dashboard and an admin API to look at. With a real `DATABASE_URL`
//! nothing is generated: the admin API stays off until a token is set.

use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::Rng as _;

/// The token file's name in the embedded cluster's data directory.
pub const FILE: &str = "admin-token";

/// Where the embedded default keeps its generated token.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The token kept in `data_dir`, if there is one.
pub fn read(data_dir: &Path) -> io::Result<Option<String>> {
    let path = path(data_dir);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Only its owner may read it: tighten a file someone loosened.
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the admin token file was readable by others: made 0600");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut token = String::new();
    file.take(1024).read_to_string(&mut token)?;
    let token = token.trim().to_owned();
    Ok((!token.is_empty()).then_some(token))
}

/// The token kept in `data_dir`, generated (256 random bits) and written
/// with mode 0600 if there is none yet; `true` when generated now.
pub fn read_or_generate(data_dir: &Path) -> io::Result<(String, bool)> {
    if let Some(token) = read(data_dir)? {
        return Ok((token, false));
    }
    let bytes: [u8; 32] = rand::rng().random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path(data_dir))?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok((token, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sb-token-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir).unwrap(), None);
        let (token, made) = read_or_generate(&dir).unwrap();
        assert!(made);
        assert!(token.len() >= 43, "{token}");
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_or_generate(&dir).unwrap(), (token.clone(), false));
        // Loosened by hand: tightened again on the next read.
        std::fs::set_permissions(path(&dir), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&dir).unwrap(), Some(token));
        let mode = std::fs::metadata(path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
