//! `--user USER[:GROUP]`: who the workers run as.
//!
//! pminit binds its sockets first (as root, so port 80 works), then each
//! worker drops to this identity before exec: setgroups, setgid, setuid, in
//! that order (after setuid it could no longer change its groups). A static
//! glibc cannot use NSS, so names are looked up by reading `/etc/passwd` and
//! `/etc/group` ourselves; numeric ids need neither file (a scratch image
//! has none).

/// `--user` as written: each part a name or a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub user: String,
    pub group: Option<String>,
}

/// The identity a worker takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
    /// From /etc/passwd, when the user has an entry there.
    pub name: Option<String>,
    pub home: Option<String>,
}

/// Parses `USER[:GROUP]`; Err names what is wrong.
/// The largest id a process can take: 2^32-2 (2^32-1 is (uid_t)-1).
pub const MAX_ID: u32 = u32::MAX - 1;

pub fn parse_spec(s: &str) -> Result<Spec, String> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let valid = |p: &str| !p.is_empty() && !p.contains(|c: char| c.is_whitespace() || c == ':');
    if !valid(user) || group.is_some_and(|g| !valid(g)) {
        return Err(format!(
            "invalid value {s:?}: expected USER or USER:GROUP, each a name or a number (node, 1000:1000)"
        ));
    }
    // A number must be an id setuid/setgid can take: (uid_t)-1 means "leave
    // unchanged" to them, and a bigger number does not fit.
    for part in std::iter::once(user).chain(group) {
        if part.bytes().all(|b| b.is_ascii_digit())
            && part.parse::<u32>().map_or(true, |n| n > MAX_ID)
        {
            return Err(format!(
                "invalid value {s:?}: id {part} is out of range: a numeric user or group id is 0-{MAX_ID}"
            ));
        }
    }
    Ok(Spec {
        user: user.to_string(),
        group: group.map(str::to_string),
    })
}

/// One line of /etc/passwd: name:password:uid:gid:gecos:home:shell.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0].starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// One line of /etc/group: name:password:gid:member,member.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0].starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `spec` against the texts of /etc/passwd and /etc/group (empty
/// when a file is missing). A numeric user with no entry and no GROUP gets
/// its own number as group: Docker would use group 0, but a worker should
/// not land in group root unasked.
pub fn resolve(spec: &Spec, passwd: &str, group: &str) -> Result<Identity, String> {
    let entry = match spec.user.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == spec.user)
                .ok_or_else(|| {
                    format!(
                        "no user {:?} in /etc/passwd (a number needs no entry)",
                        spec.user
                    )
                })?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => spec.user.parse::<u32>().unwrap_or_default(),
    };
    let gid = match &spec.group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g.as_str())
                .map(|e| e.gid)
                .ok_or_else(|| format!("no group {g:?} in /etc/group (a number needs no entry)"))?,
        },
        None => entry.as_ref().map_or(uid, |e| e.gid),
    };
    let mut groups = vec![gid];
    if let Some(e) = &entry {
        for g in group_entries(group).filter(|g| g.members.contains(&e.name)) {
            if !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        name: entry.as_ref().map(|e| e.name.to_string()),
        home: entry
            .as_ref()
            .map(|e| e.home.to_string())
            .filter(|h| !h.is_empty()),
    })
}

/// Resolves `spec` on this machine, and checks that pminit may switch to
/// it: only root can, unless it already is that identity.
pub fn lookup(spec: &Spec) -> Result<Identity, String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let id = resolve(spec, &read("/etc/passwd"), &read("/etc/group"))?;
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 && (id.uid != euid || id.gid != egid) {
        return Err(format!(
            "running workers as uid {} gid {} needs root; pminit runs as uid {euid}",
            id.uid, id.gid
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
# a comment
node:x:1000:1000::/home/node:/bin/sh
app:x:1001:1001:App:/srv/app:/usr/sbin/nologin
broken:x:notanumber:1:::
";
    const GROUP: &str = "root:x:0:
node:x:1000:
app:x:1001:
web:x:33:node,app
audio:x:29:app
";

    fn spec(s: &str) -> Spec {
        parse_spec(s).expect("valid spec")
    }

    #[test]
    fn names_numbers_and_groups() {
        let id = resolve(&spec("node"), PASSWD, GROUP).expect("node");
        assert_eq!(
            id,
            Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 33],
                name: Some("node".into()),
                home: Some("/home/node".into()),
            }
        );
        let id = resolve(&spec("app:web"), PASSWD, GROUP).expect("app:web");
        assert_eq!((id.uid, id.gid), (1001, 33));
        assert_eq!(id.groups, vec![33, 29]);
        // A number that has an entry takes its group and home.
        let id = resolve(&spec("1001"), PASSWD, GROUP).expect("1001");
        assert_eq!((id.gid, id.home.as_deref()), (1001, Some("/srv/app")));
        // A number with no entry, and no files at all (a scratch image).
        let id = resolve(&spec("4242"), "", "").expect("4242");
        assert_eq!(
            (id.uid, id.gid, id.groups.clone()),
            (4242, 4242, vec![4242])
        );
        assert_eq!(id.home, None);
        let id = resolve(&spec("4242:5"), "", "").expect("4242:5");
        assert_eq!((id.uid, id.gid), (4242, 5));
    }

    #[test]
    fn unknown_names_and_bad_specs_are_refused() {
        let e = resolve(&spec("nobody-here"), PASSWD, GROUP).expect_err("unknown user");
        assert!(e.contains("no user \"nobody-here\" in /etc/passwd"), "{e}");
        let e = resolve(&spec("node:nogroup"), PASSWD, GROUP).expect_err("unknown group");
        assert!(e.contains("no group \"nogroup\" in /etc/group"), "{e}");
        let e = resolve(&spec("node"), "", "").expect_err("no passwd");
        assert!(e.contains("no user"), "{e}");
        for bad in ["", ":", "node:", ":web", "a b", "a:b:c"] {
            let e = parse_spec(bad).expect_err(bad);
            assert!(e.contains("expected USER or USER:GROUP"), "{bad}: {e}");
        }
        for bad in ["4294967295", "1000:4294967295", "99999999999"] {
            let e = parse_spec(bad).expect_err(bad);
            assert!(
                e.contains("out of range") && e.contains("0-4294967294"),
                "{bad}: {e}"
            );
        }
        assert!(parse_spec("4294967294:0").is_ok());
    }
}
