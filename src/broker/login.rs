//! Who may log in where: the two kinds of login, never mixed.
//!
//! - **Services** (and the daemon, and the command line) log in on the
//!   MQTT listener with a `broker.users` account or the daemon's own
//!   `mqtt` login. With no account configured at all, that (loopback)
//!   listener lets anyone in, as before accounts existed.
//! - **Browsers** log in on the WebSocket listener as `{package}/{user}`
//!   (package and user names cannot contain `/`, so the split is
//!   unambiguous) with that user's subscribe token as the password, which
//!   the host application issued. Without `subscribe_token_secret` (a demo
//!   on loopback: configuration refuses it elsewhere) the password is not
//!   checked, but the connection is still confined to that user.

use std::collections::HashMap;
use std::sync::Arc;

use rumqttc::mqttbytes::Protocol;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};

use crate::config::Secret;
use crate::model::{Package, User};
use crate::stats::Refusal;
use crate::token::TokenKey;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// MQTT over TCP: services.
    Mqtt,
    /// MQTT over WebSocket: browsers.
    WebSocket,
}

impl Listener {
    /// Its index in [`crate::stats::LISTENER_LABELS`].
    pub fn index(self) -> usize {
        match self {
            Listener::Mqtt => 0,
            Listener::WebSocket => 1,
        }
    }
}

/// What a login grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everything: a trusted service.
    Service,
    /// One user's topics (see `confine`).
    Browser(Browser),
}

/// A browser's identity, as its login proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Browser {
    pub package: Package,
    pub user: User,
    /// When its token expires (seconds since the epoch): the connection is
    /// closed then. `None` without tokens.
    pub expires: Option<u64>,
}

/// Why a login was refused: the CONNACK code, what to count, and words for
/// the log (never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ConnectReturnCode,
    pub counted: Refusal,
    pub reason: String,
}

impl Refused {
    fn login(reason: impl Into<String>) -> Self {
        Self {
            code: ConnectReturnCode::BadUserNamePassword,
            counted: Refusal::Login,
            reason: reason.into(),
        }
    }

    fn not_authorized(counted: Refusal, reason: impl Into<String>) -> Self {
        Self {
            code: ConnectReturnCode::NotAuthorized,
            counted,
            reason: reason.into(),
        }
    }
}

/// The accounts and the token key logins are checked against.
#[derive(Debug, Clone)]
pub struct Logins {
    /// Service accounts: `broker.users` and the daemon's own login.
    pub accounts: HashMap<String, Secret>,
    /// Set with `subscribe_token_secret`.
    pub tokens: Option<Arc<TokenKey>>,
}

impl Logins {
    /// Decides a CONNECT that came in on `listener` at `now` (seconds since
    /// the epoch).
    pub fn check(
        &self,
        listener: Listener,
        connect: &Connect,
        now: u64,
    ) -> Result<Access, Refused> {
        if connect.protocol != Protocol::V4 {
            return Err(Refused {
                code: ConnectReturnCode::RefusedProtocolVersion,
                counted: Refusal::Protocol,
                reason: "only MQTT 3.1.1 is spoken here".into(),
            });
        }
        match listener {
            Listener::Mqtt => self.service(connect),
            Listener::WebSocket => self.browser(connect, now).map(Access::Browser),
        }
    }

    fn service(&self, connect: &Connect) -> Result<Access, Refused> {
        let login = connect.login.as_ref();
        if let Some(name) = login.map(|l| l.username.as_str())
            && name.contains('/')
        {
            return Err(Refused::not_authorized(
                Refusal::Login,
                "a browser login ({package}/{user}) on the MQTT listener: browsers log in on the WebSocket listener",
            ));
        }
        if self.accounts.is_empty() {
            return Ok(Access::Service);
        }
        let Some(login) = login.filter(|l| !l.username.is_empty()) else {
            return Err(Refused::login("no login: this broker requires an account"));
        };
        let known = self.accounts.get(&login.username).is_some_and(|password| {
            !login.password.is_empty()
                && aws_lc_rs::constant_time::verify_slices_are_equal(
                    password.expose().as_bytes(),
                    login.password.as_bytes(),
                )
                .is_ok()
        });
        if known {
            Ok(Access::Service)
        } else {
            Err(Refused::login(format!(
                "unknown account or wrong password for '{}'",
                login.username.escape_debug()
            )))
        }
    }

    fn browser(&self, connect: &Connect, now: u64) -> Result<Browser, Refused> {
        if connect.last_will.is_some() {
            return Err(Refused::not_authorized(
                Refusal::Will,
                "a browser may not leave a Last Will",
            ));
        }
        let Some(login) = connect.login.as_ref() else {
            return Err(Refused::login(
                "no login: browsers log in as {package}/{user} with their subscribe token",
            ));
        };
        let Some((package, user)) = login.username.split_once('/') else {
            return Err(Refused::not_authorized(
                Refusal::Login,
                format!(
                    "'{}' is not a browser login ({{package}}/{{user}}): services log in on the MQTT listener",
                    login.username.escape_debug()
                ),
            ));
        };
        let (package, user) = match (Package::parse(package), User::parse(user)) {
            (Ok(package), Ok(user)) => (package, user),
            (Err(e), _) | (_, Err(e)) => return Err(Refused::login(e.to_string())),
        };
        let expires = match &self.tokens {
            None => None,
            Some(key) => {
                let password = (!login.password.is_empty()).then_some(login.password.as_str());
                match key.verify(password, &package, &user, now) {
                    Ok(expires) => Some(expires),
                    Err(e) => return Err(Refused::login(e.to_string())),
                }
            }
        };
        Ok(Browser {
            package,
            user,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::LastWill;

    const SECRET: &str = "a-shared-secret-of-at-least-32-characters";

    fn logins(accounts: &[(&str, &str)], tokens: bool) -> Logins {
        Logins {
            accounts: accounts
                .iter()
                .map(|(u, p)| ((*u).to_owned(), Secret::new(*p)))
                .collect(),
            tokens: tokens.then(|| Arc::new(TokenKey::new(SECRET))),
        }
    }

    fn connect(login: Option<(&str, &str)>) -> Connect {
        let mut c = Connect::new("c");
        if let Some((u, p)) = login {
            c.set_login(u, p);
        }
        c
    }

    fn token(package: &str, user: &str, expires: u64) -> String {
        TokenKey::new(SECRET).issue(
            &Package::parse(package).unwrap(),
            &User::parse(user).unwrap(),
            expires,
        )
    }

    #[test]
    fn services_need_an_account_when_there_are_any() {
        let l = logins(&[("svc", "pw")], false);
        let check = |c| l.check(Listener::Mqtt, &c, 0);
        assert_eq!(check(connect(Some(("svc", "pw")))), Ok(Access::Service));
        for bad in [
            None,
            Some(("svc", "nope")),
            Some(("svc", "")),
            Some(("other", "pw")),
        ] {
            let e = check(connect(bad)).unwrap_err();
            assert_eq!(e.code, ConnectReturnCode::BadUserNamePassword, "{bad:?}");
            assert!(!e.reason.contains("pw"), "{}", e.reason);
        }
        let open = logins(&[], false);
        assert_eq!(
            open.check(Listener::Mqtt, &connect(None), 0),
            Ok(Access::Service)
        );
    }

    #[test]
    fn the_two_kinds_of_login_are_never_mixed() {
        let l = logins(&[("svc", "pw")], true);
        let browser_login = token("crm", "alice", 100);
        let e = l
            .check(
                Listener::Mqtt,
                &connect(Some(("crm/alice", &browser_login))),
                0,
            )
            .unwrap_err();
        assert_eq!(e.code, ConnectReturnCode::NotAuthorized);
        let e = l
            .check(Listener::WebSocket, &connect(Some(("svc", "pw"))), 0)
            .unwrap_err();
        assert_eq!(e.code, ConnectReturnCode::NotAuthorized);
        // Even with no accounts, the MQTT listener is not for browsers.
        let open = logins(&[], false);
        assert!(
            open.check(Listener::Mqtt, &connect(Some(("crm/alice", "x"))), 0)
                .is_err()
        );
    }

    #[test]
    fn a_browser_logs_in_as_its_user_with_its_token() {
        let l = logins(&[], true);
        let good = token("crm", "alice", 100);
        assert_eq!(
            l.check(
                Listener::WebSocket,
                &connect(Some(("crm/alice", &good))),
                50
            ),
            Ok(Access::Browser(Browser {
                package: Package::parse("crm").unwrap(),
                user: User::parse("alice").unwrap(),
                expires: Some(100),
            }))
        );
        for (name, password, now) in [
            ("crm/bob", good.as_str(), 50),
            ("crm/alice", good.as_str(), 100),
            ("crm/alice", "", 50),
            ("crm/alice/x", good.as_str(), 50),
            ("crm/vapid", good.as_str(), 50),
        ] {
            let e = l
                .check(Listener::WebSocket, &connect(Some((name, password))), now)
                .unwrap_err();
            assert_eq!(e.code, ConnectReturnCode::BadUserNamePassword, "{name}");
            assert_eq!(e.counted, Refusal::Login);
        }
        assert!(l.check(Listener::WebSocket, &connect(None), 50).is_err());
    }

    #[test]
    fn without_tokens_a_browser_is_still_only_its_user() {
        let l = logins(&[], false);
        let access = l
            .check(Listener::WebSocket, &connect(Some(("demo/me", ""))), 0)
            .unwrap();
        assert!(matches!(
            access,
            Access::Browser(Browser { expires: None, .. })
        ));
    }

    #[test]
    fn a_browser_may_not_leave_a_will_nor_speak_mqtt_5() {
        let l = logins(&[], false);
        let mut c = connect(Some(("demo/me", "")));
        c.last_will = Some(LastWill::new(
            "axion/demo/push/bob/send",
            "x",
            QoS::AtMostOnce,
            false,
        ));
        let e = l.check(Listener::WebSocket, &c, 0).unwrap_err();
        assert_eq!(e.counted, Refusal::Will);
        let mut c = connect(Some(("demo/me", "")));
        c.protocol = Protocol::V5;
        let e = l.check(Listener::WebSocket, &c, 0).unwrap_err();
        assert_eq!(e.code, ConnectReturnCode::RefusedProtocolVersion);
    }
}
