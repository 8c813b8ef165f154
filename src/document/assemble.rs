//! Assembly, in FlexiAPI's order (reference §1.9): the request space's static part (base
//! linphonerc, custom entries, `misc/contacts-vcard-list`, prepared once per snapshot), `ui`,
//! `proxy_0` with `reg_identity`, then one `auth_info_N` per password. Reads the spaces,
//! account and passwords; writes the document and remembers where the hook points are.
//! Errors: 500 if a stored INI no longer parses ([`PreparedSpace::base`]).

use super::PreparedSpace;
use crate::error::AppError;
use crate::lpconfig::Config;
use crate::model::{Account, Password, Space};

/// The document and the sections hooks will be called on.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The document so far.
    pub config: Config,
    /// Index of `proxy_0`, when there is an account.
    pub proxy_section: Option<usize>,
    /// Index of each password's `auth_info_N`, with the password.
    pub auth_info_sections: Vec<(usize, Password)>,
}

/// Builds the document. `space` is the request's space (base rc, custom entries, vCard URL);
/// `account_space` the account's (realm and `ui` flags), as FlexiAPI splits them.
pub fn assemble(
    space: &PreparedSpace,
    account_space: Option<&PreparedSpace>,
    account: Option<&Account>,
    passwords: &[Password],
) -> Result<Assembled, AppError> {
    let mut config = space.base()?.clone();
    let Some(account) = account else {
        return Ok(Assembled {
            config,
            proxy_section: None,
            auth_info_sections: Vec::new(),
        });
    };
    let home = account_space.unwrap_or(space);
    if account_space.is_some() && !space.has_ui() {
        config.sections.push(home.ui().clone());
    }
    let realm = home.space.realm.as_str();
    let proxy = config.get_or_create("proxy_0");
    config.sections[proxy].push("reg_identity", account.full_identifier());
    let mut auth_info_sections = Vec::with_capacity(passwords.len());
    for (n, password) in passwords.iter().enumerate() {
        let index = config.get_or_create(&format!("auth_info_{n}"));
        let section = &mut config.sections[index];
        section.push("username", account.username.as_str());
        section.push("domain", account.domain.as_str());
        section.push("ha1", password.ha1.as_str());
        section.push("realm", realm);
        section.push("algorithm", password.algorithm.as_str());
        auth_info_sections.push((index, password.clone()));
    }
    Ok(Assembled {
        config,
        proxy_section: Some(proxy),
        auth_info_sections,
    })
}

/// [`assemble`] from plain spaces, preparing them on the spot: for tools and benchmarks that
/// hold a [`Space`] rather than a snapshot's [`PreparedSpace`].
pub fn assemble_spaces(
    space: &Space,
    account_space: Option<&Space>,
    account: Option<&Account>,
    passwords: &[Password],
) -> Result<Assembled, AppError> {
    let prepared = PreparedSpace::new(space.clone());
    let home = account_space.map(|s| PreparedSpace::new(s.clone()));
    assemble(&prepared, home.as_ref(), account, passwords)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lpconfig::xml::render;
    use crate::model::Algorithm;
    use std::collections::BTreeMap;

    fn anna() -> Account {
        Account {
            id: 7,
            username: "anna".into(),
            domain: "sip.example.com".into(),
            email: None,
            display_name: Some("Anna O'Reily".into()),
            phone: None,
            activated: false,
            blocked: false,
            admin: false,
            dtmf_protocol: None,
            ip_address: None,
            user_agent: None,
            created_at: 0,
            updated_at: 0,
            dictionary: BTreeMap::new(),
        }
    }

    #[test]
    fn flexiapi_order() {
        let mut space = Space::new("sip.example.com", "sip.example.com");
        space.custom_entries = Some(
            "[sip]\ntransport=tls\n[proxy_0]\nreg_proxy=<sip:sip.example.com;transport=tls>\n"
                .into(),
        );
        space.vcard_list_url = Some("https://sip.example.com/contacts/vcard".into());
        let pw = Password {
            id: 1,
            account_id: 7,
            algorithm: Algorithm::Sha256,
            ha1: "e372".into(),
        };
        let a = assemble_spaces(&space, Some(&space), Some(&anna()), &[pw]).unwrap();
        assert_eq!(
            a.config.names(),
            vec!["sip", "proxy_0", "misc", "ui", "auth_info_0"]
        );
        assert_eq!(a.proxy_section, Some(1));
        assert_eq!(a.auth_info_sections[0].0, 4);
        let xml = render(&a.config);
        assert!(
            xml.contains(
                "<entry name=\"reg_proxy\">&lt;sip:sip.example.com;transport=tls&gt;</entry>\
             <entry name=\"reg_identity\">\"Anna O'Reily\" &lt;sip:anna@sip.example.com&gt;</entry>"
            ),
            "{xml}"
        );
        assert!(xml.contains(
            "<section name=\"auth_info_0\"><entry name=\"username\">anna</entry>\
             <entry name=\"domain\">sip.example.com</entry><entry name=\"ha1\">e372</entry>\
             <entry name=\"realm\">sip.example.com</entry><entry name=\"algorithm\">SHA-256</entry></section>"
        ), "{xml}");
    }

    #[test]
    fn anonymous_has_no_account_sections() {
        let mut space = Space::new("d", "h");
        space.base_rc = Some("[sip]\nguess_hostname=1\n".into());
        let a = assemble_spaces(&space, None, None, &[]).unwrap();
        assert_eq!(a.config.names(), vec!["sip"]);
        assert!(a.proxy_section.is_none());
    }
}
