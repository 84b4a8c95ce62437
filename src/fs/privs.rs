//! The kernel's rules for dropping set-user-ID and set-group-ID bits when a file changes
//! (fs/attr.c `setattr_should_drop_suidgid`, fs/posix_acl.c `posix_acl_update_mode`),
//! applied by the daemon where the kernel's FUSE layer leaves them to it: the daemon
//! changes the backing file as root (CAP_FSETID), for which the backing file system drops
//! nothing, so the caller's own credentials are looked at here.

/// Who asked: the request's uid, gid and pid (a thread id) as FUSE gives them.
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// The caller's effective CAP_FSETID and supplementary groups, from /proc/<pid>/status;
/// `None` when the process is gone (then only the uid and gid are known).
fn status_of(pid: u32) -> Option<(bool, Vec<u32>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut cap = None;
    let mut groups = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("CapEff:") {
            cap = u64::from_str_radix(v.trim(), 16).ok();
        } else if let Some(v) = line.strip_prefix("Groups:") {
            groups = v
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect();
        }
    }
    const CAP_FSETID: u32 = 4;
    Some((cap? & (1 << CAP_FSETID) != 0, groups))
}

/// The daemon itself: a change made on its own behalf drops nothing.
impl Default for Requester {
    fn default() -> Self {
        Requester::DAEMON
    }
}

impl Requester {
    /// The daemon itself (root, CAP_FSETID): drops nothing.
    pub const DAEMON: Requester = Requester {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    /// (holds CAP_FSETID, is in group `gid`: its own gid or a supplementary one).
    fn standing(&self, gid: u32) -> (bool, bool) {
        match status_of(self.pid) {
            Some((capable, groups)) => (capable, self.gid == gid || groups.contains(&gid)),
            None => (self.uid == 0, self.gid == gid),
        }
    }
}

/// The mode a regular file of mode `mode` and group `gid` keeps after `who` changed its
/// data (write, truncate, fallocate): set-user-ID always goes, set-group-ID when group
/// execute is set or `who` is not in the group, unless `who` holds CAP_FSETID.
pub fn after_change(mode: u32, gid: u32, who: Requester) -> u32 {
    if mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return mode;
    }
    let (capable, in_group) = who.standing(gid);
    if capable {
        return mode;
    }
    let mut m = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group) {
        m &= !libc::S_ISGID;
    }
    m
}

/// The mode a non-directory of mode `mode` and group `gid` (before the change) keeps
/// after `who` changed its owner or group (fs/open.c `chown_common`): set-user-ID always
/// goes, root's change too; set-group-ID with group execute, or when `who` is neither in
/// the group nor holds CAP_FSETID.
pub fn after_chown(mode: u32, gid: u32, who: Requester) -> u32 {
    if mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return mode;
    }
    let mut m = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 {
        let drop = mode & libc::S_IXGRP != 0 || {
            let (capable, in_group) = who.standing(gid);
            !capable && !in_group
        };
        if drop {
            m &= !libc::S_ISGID;
        }
    }
    m
}

/// The mode a file of mode `mode` and group `gid` keeps after `who` set its access ACL:
/// set-group-ID goes unless `who` is in the group or holds CAP_FSETID.
pub fn after_acl(mode: u32, gid: u32, who: Requester) -> u32 {
    if mode & libc::S_ISGID == 0 {
        return mode;
    }
    match who.standing(gid) {
        (true, _) | (_, true) => mode,
        _ => mode & !libc::S_ISGID,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A requester whose process is gone: judged by uid and gid.
    fn gone(uid: u32, gid: u32) -> Requester {
        Requester {
            uid,
            gid,
            pid: u32::MAX,
        }
    }

    #[test]
    fn the_kernels_rules() {
        let other = gone(1000, 1000);
        // Not in the group: both bits go, with or without group execute.
        assert_eq!(after_change(0o6666, 0, other) & 0o7777, 0o666);
        assert_eq!(after_change(0o2766, 0, other) & 0o7777, 0o766);
        // In the group: set-group-ID stays without group execute, goes with it.
        assert_eq!(after_change(0o2666, 1000, other) & 0o7777, 0o2666);
        assert_eq!(after_change(0o2676, 1000, other) & 0o7777, 0o676);
        // Root (CAP_FSETID): nothing goes.
        assert_eq!(after_change(0o6777, 5, gone(0, 0)) & 0o7777, 0o6777);
        // chown: set-user-ID always, set-group-ID with group execute or from outside.
        assert_eq!(after_chown(0o6755, 0, gone(0, 0)) & 0o7777, 0o755);
        assert_eq!(after_chown(0o2745, 0, gone(0, 0)) & 0o7777, 0o2745);
        assert_eq!(after_chown(0o2745, 0, other) & 0o7777, 0o745);
        assert_eq!(after_chown(0o2745, 1000, other) & 0o7777, 0o2745);
        // ACLs: set-group-ID goes for one outside the group only.
        assert_eq!(after_acl(0o2777, 0, other) & 0o7777, 0o777);
        assert_eq!(after_acl(0o2777, 1000, other) & 0o7777, 0o2777);
        assert_eq!(after_acl(0o4755, 0, other) & 0o7777, 0o4755);
        // This process: read from /proc (the tests run as root).
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let me = Requester {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        };
        assert_eq!(after_change(0o6777, 5, me) & 0o7777, 0o6777);
    }
}
