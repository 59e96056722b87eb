//! The one policy point for access: roles, permissions, the table that joins
//! them, and the principal a request or an association acts as.
//!
//! Every boundary (the HTTP layer, the DIMSE association policy) resolves
//! its caller to a [`Principal`] and asks [`Principal::may`]; nothing else
//! decides who may do what. Study-scoped principals (share links, partner
//! hospitals) carry a [`StudyScope`] that archive queries apply.
//!
//! Non-goals: authentication itself (passwords, tokens, certificates) is
//! done by the boundary; this module only states what an authenticated
//! principal may do.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::Uid;

/// A role a user or a machine token is given (issue 13's six roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Radiologist,
    Technologist,
    Referrer,
    Auditor,
    Partner,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Radiologist,
        Role::Technologist,
        Role::Referrer,
        Role::Auditor,
        Role::Partner,
    ];

    /// The role's name as written in the config, the CLI and the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Radiologist => "radiologist",
            Role::Technologist => "technologist",
            Role::Referrer => "referrer",
            Role::Auditor => "auditor",
            Role::Partner => "partner",
        }
    }

    /// Parses a role name (case-insensitive); `None` for anything else.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a principal may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Search and read patient data (QIDO, WADO, C-FIND, C-GET, C-MOVE, the viewer).
    Read,
    /// Store objects (STOW-RS, C-STORE).
    Store,
    /// Create and revoke share links.
    Share,
    /// Delete studies, series and instances.
    Delete,
    /// Administer users and machine tokens.
    Administer,
    /// Read the audit trail.
    ReadAudit,
    /// Create, change and cancel orders (worklist steps): the RIS desk and
    /// the technologist; reading orders needs [`Permission::Read`].
    Schedule,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::Read,
        Permission::Store,
        Permission::Share,
        Permission::Delete,
        Permission::Administer,
        Permission::ReadAudit,
        Permission::Schedule,
    ];
}

/// The one permission table: whether `role` has `permission`.
pub fn role_allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => true,
        Role::Radiologist => matches!(permission, Read | Store | Share),
        Role::Technologist => matches!(permission, Read | Store | Share | Schedule),
        Role::Referrer => matches!(permission, Read | Share),
        Role::Auditor => matches!(permission, ReadAudit),
        // Scoped to the studies shared with the partner (see `StudyScope`).
        Role::Partner => matches!(permission, Read),
    }
}

/// Which studies a principal may see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StudyScope {
    /// Every study (subject to the permission table).
    #[default]
    All,
    /// Only these studies (a share link, a partner hospital).
    Studies(BTreeSet<Uid>),
}

impl StudyScope {
    pub fn allows(&self, study: &Uid) -> bool {
        match self {
            StudyScope::All => true,
            StudyScope::Studies(s) => s.contains(study),
        }
    }
}

/// How a principal was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// Authentication is off (loopback, `--demo`): the local operator.
    Unauthenticated,
    /// A local user (password, session cookie, HTTP Basic).
    User,
    /// A machine token.
    Token,
    /// A user or client of an OpenID Connect provider.
    Oidc,
    /// A share link.
    Share,
    /// A DIMSE peer (AE title, address, certificate).
    DimsePeer,
}

/// Who is acting: resolved once at the boundary, asked by the policy point,
/// named in every audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// User name, token name, share id, or calling AE title.
    pub name: String,
    /// `None` only for `Unauthenticated` (who may do everything) and
    /// `Share` (who may only read its scope).
    pub role: Option<Role>,
    /// The client's address as the boundary saw it (after `trusted_proxies`).
    pub address: Option<IpAddr>,
    pub scope: StudyScope,
}

impl Principal {
    /// The operator of an archive with authentication off.
    pub fn unauthenticated(address: Option<IpAddr>) -> Principal {
        Principal {
            kind: PrincipalKind::Unauthenticated,
            name: "anonymous".to_owned(),
            role: None,
            address,
            scope: StudyScope::All,
        }
    }

    /// Whether this principal has `permission` (before any study scope).
    pub fn may(&self, permission: Permission) -> bool {
        match (self.kind, self.role) {
            (PrincipalKind::Unauthenticated, _) => true,
            (PrincipalKind::Share, _) => permission == Permission::Read,
            (_, Some(role)) => role_allows(role, permission),
            (_, None) => false,
        }
    }

    /// Whether this principal has `permission` on `study`.
    pub fn may_on_study(&self, permission: Permission, study: &Uid) -> bool {
        self.may(permission) && self.scope.allows(study)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("ADMIN"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn table_gives_each_role_its_permissions() {
        let has = |r| {
            Permission::ALL
                .into_iter()
                .filter(|p| role_allows(r, *p))
                .collect::<Vec<_>>()
        };
        assert_eq!(has(Role::Admin), Permission::ALL.to_vec());
        assert_eq!(
            has(Role::Radiologist),
            vec![Permission::Read, Permission::Store, Permission::Share]
        );
        assert_eq!(
            has(Role::Technologist),
            vec![
                Permission::Read,
                Permission::Store,
                Permission::Share,
                Permission::Schedule
            ]
        );
        assert_eq!(
            has(Role::Referrer),
            vec![Permission::Read, Permission::Share]
        );
        assert_eq!(has(Role::Auditor), vec![Permission::ReadAudit]);
        assert_eq!(has(Role::Partner), vec![Permission::Read]);
    }

    #[test]
    fn scoped_principal_reads_only_its_studies() -> Result<(), crate::UidError> {
        let shared = Uid::parse("1.2.3")?;
        let other = Uid::parse("1.2.4")?;
        let p = Principal {
            kind: PrincipalKind::Share,
            name: "s1".into(),
            role: None,
            address: None,
            scope: StudyScope::Studies([shared.clone()].into_iter().collect()),
        };
        assert!(p.may_on_study(Permission::Read, &shared));
        assert!(!p.may_on_study(Permission::Read, &other));
        assert!(!p.may(Permission::Store));
        Ok(())
    }
}
