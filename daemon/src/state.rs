//! The daemon's state as plain data: what is mounted where, from which source and
//! configuration. It is everything a new process needs to serve the same mounts (a hot
//! upgrade hands it over), and what `GET /api/v1/config` reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One mount, as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountState {
    /// The bootstrap file.
    pub source: String,
    /// Filesystem type (`rafs`).
    pub fs_type: String,
    /// The configuration text the mount was made with. It may hold secrets: never
    /// return it through the API as is.
    pub config: String,
    /// Paths prefetched after mounting.
    pub prefetch_files: Vec<String>,
}

/// All mounts by mountpoint inside the daemon's filesystem (`/` or `/sub`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// Mounts.
    pub mounts: BTreeMap<String, MountState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut s = DaemonState::default();
        let m = MountState {
            source: "/b".into(),
            fs_type: "rafs".into(),
            config: "{}".into(),
            prefetch_files: vec!["/a".into()],
        };
        s.mounts.insert("/sub".into(), m);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<DaemonState>(&text).unwrap(), s);
    }
}
