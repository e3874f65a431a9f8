//! Toll-fraud guard: classify dialled numbers and apply a per-tenant policy.
//!
//! Exists because the most expensive thing that can happen to a hosted
//! contact center is International Revenue Share Fraud: a stolen agent
//! password or trunk credential used overnight to pump calls to premium-rate
//! or high-cost destinations whose operators kick back part of the
//! termination fee. The gateway calls [`check`] on every outbound INVITE
//! (after normalising the dialled number to E.164) and refuses blocked calls
//! (`403 Forbidden`), so a compromised account can only reach what its
//! tenant's [`DialPolicy`] allows.
//!
//! # Classification
//!
//! Input must be `+` followed by 6 to 15 digits, first digit non-zero
//! (E.164), or one of the emergency short codes `112`, `911`, `999`, `000`.
//! Anything else is [`NumberClass::Invalid`]. NANP (`+1`) numbers must have
//! exactly ten digits after the `1`, with an area code starting 2-9.
//!
//! Order of rules: emergency, invalid, premium (table below), domestic
//! (starts with the tenant's `home_country`, except non-US/Canada NANP
//! area codes for a `+1` tenant), otherwise international.
//!
//! # Premium-rate and high-cost table
//!
//! Prefixes are E.164 digits without `+`. Not exhaustive: it covers the
//! ranges most abused for IRSF; operators can narrow further with
//! `allowed_prefixes`.
//!
//! | Prefix | Range |
//! |---|---|
//! | `1900` | NANP 900 premium-rate area code |
//! | `1NPA976` | NANP 976 premium exchange in any area code (rule, not prefix) |
//! | `449` | UK 09x premium rate (090, 091, 098) |
//! | `44871` `44872` `44873` | UK 0871-0873 revenue-sharing |
//! | `4470` | UK 070 "personal numbers" (classic IRSF range) |
//! | `44118` | UK 118 directory enquiries |
//! | `3389` | France 089x premium |
//! | `49900` `49137` | Germany 0900 premium, 0137 televoting |
//! | `34803` `34806` `34807` `34905` | Spain premium / televoting |
//! | `3989` | Italy 89x premium |
//! | `61190` | Australia 190x premium |
//! | `64900` | New Zealand 0900 premium |
//! | `870` `881` `882` `883` | Inmarsat, global satellite, international networks |
//! | `979` | ITU International Premium Rate Service |
//! | `53` `247` `252` `290` `677` `682` `683` `690` | High-cost IRSF destinations: Cuba, Ascension, Somalia, St Helena, Solomon Is., Cook Is., Niue, Tokelau |
//!
//! # NANP countries other than the US and Canada
//!
//! Caribbean and Atlantic NANP members share country code `1` but are billed
//! as international and are the classic "one-ring" scam destinations. For a
//! `+1` tenant these area codes are [`NumberClass::International`]:
//! 242 Bahamas, 246 Barbados, 264 Anguilla, 268 Antigua, 284 BVI, 345 Cayman,
//! 441 Bermuda, 473 Grenada, 649 Turks and Caicos, 658/876 Jamaica,
//! 664 Montserrat, 721 Sint Maarten, 758 St Lucia, 767 Dominica,
//! 784 St Vincent, 809/829/849 Dominican Republic, 868 Trinidad and Tobago,
//! 869 St Kitts and Nevis. US territories (Puerto Rico, USVI, Guam, ...) stay
//! domestic.
//!
//! # Policy
//!
//! * Invalid numbers are always blocked; emergency codes are always allowed
//!   (never block a caller from reaching emergency services).
//! * Premium is blocked unless `allow_premium`; a *foreign* premium number
//!   additionally needs `allow_international`.
//! * International is blocked unless `allow_international`.
//! * A non-empty `allowed_prefixes` is a whitelist that *narrows* the above:
//!   the number must also start with one of the prefixes (with or without `+`).

use serde::{Deserialize, Serialize};

use crate::GuardError;

const EMERGENCY: &[&str] = &["112", "911", "999", "000"];

const PREMIUM_PREFIXES: &[&str] = &[
    "1900", "449", "44871", "44872", "44873", "4470", "44118", "3389", "49900", "49137", "34803",
    "34806", "34807", "34905", "3989", "61190", "64900", "870", "881", "882", "883", "979", "53",
    "247", "252", "290", "677", "682", "683", "690",
];

const NANP_FOREIGN_AREA_CODES: &[&str] = &[
    "242", "246", "264", "268", "284", "345", "441", "473", "649", "658", "664", "721", "758",
    "767", "784", "809", "829", "849", "868", "869", "876",
];

/// Category of a dialled number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NumberClass {
    /// Same country as the tenant, not premium.
    Domestic,
    /// Another country, not premium.
    International,
    /// Premium-rate or high-cost destination (see module table).
    Premium,
    /// Emergency short code.
    Emergency,
    /// Not a valid E.164 number or known short code.
    Invalid,
}

/// Why a number is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum BlockReason {
    /// Not a valid E.164 number.
    InvalidNumber,
    /// Premium-rate / high-cost destination and `allow_premium` is false.
    Premium,
    /// International destination and `allow_international` is false.
    International,
    /// Not covered by the tenant's `allowed_prefixes` whitelist.
    NotAllowedPrefix,
}

/// Refusal from [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blocked {
    /// Why.
    pub reason: BlockReason,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.reason {
            BlockReason::InvalidNumber => "invalid number",
            BlockReason::Premium => "premium-rate destination not allowed",
            BlockReason::International => "international destination not allowed",
            BlockReason::NotAllowedPrefix => "destination not in allowed prefixes",
        };
        f.write_str(why)
    }
}

/// A tenant's outbound dialling policy, stored as JSON per tenant, e.g.
/// `{"home_country":"44","allowed_prefixes":[],"allow_international":false,"allow_premium":false}`.
///
/// Deserialisation validates: `home_country` is 1-3 digits not starting with
/// 0; each prefix is 1-15 digits, optionally with a leading `+`. Missing
/// list/flags default to empty/`false` (the safe side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawDialPolicy")]
pub struct DialPolicy {
    /// Tenant's country calling code without `+`, e.g. `"1"` or `"44"`.
    pub home_country: String,
    /// Whitelist of E.164 prefixes; empty means no extra restriction.
    pub allowed_prefixes: Vec<String>,
    /// Permit international destinations.
    pub allow_international: bool,
    /// Permit premium-rate and high-cost destinations.
    pub allow_premium: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDialPolicy {
    home_country: String,
    #[serde(default)]
    allowed_prefixes: Vec<String>,
    #[serde(default)]
    allow_international: bool,
    #[serde(default)]
    allow_premium: bool,
}

impl TryFrom<RawDialPolicy> for DialPolicy {
    type Error = GuardError;

    fn try_from(r: RawDialPolicy) -> Result<Self, Self::Error> {
        let p = DialPolicy {
            home_country: r.home_country,
            allowed_prefixes: r.allowed_prefixes,
            allow_international: r.allow_international,
            allow_premium: r.allow_premium,
        };
        p.validate()?;
        Ok(p)
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl DialPolicy {
    /// Parse and validate a stored JSON policy.
    pub fn from_json(json: &str) -> Result<Self, GuardError> {
        serde_json::from_str(json).map_err(|e| GuardError::Policy(e.to_string()))
    }

    /// Check the invariants enforced on deserialisation.
    pub fn validate(&self) -> Result<(), GuardError> {
        let hc = &self.home_country;
        if !all_digits(hc) || hc.len() > 3 || hc.starts_with('0') {
            return Err(GuardError::Policy(
                "home_country must be 1-3 digits, not starting with 0".into(),
            ));
        }
        for p in &self.allowed_prefixes {
            let d = p.strip_prefix('+').unwrap_or(p);
            if !all_digits(d) || d.len() > 15 {
                return Err(GuardError::Policy(
                    "allowed_prefixes entries must be 1-15 digits".into(),
                ));
            }
        }
        Ok(())
    }

    /// Classify `number` from this tenant's point of view.
    pub fn classify(&self, number: &str) -> NumberClass {
        classify(&self.home_country, number)
    }
}

/// E.164 digits (without `+`) of a valid number, or `None`.
fn e164_digits(number: &str) -> Option<&str> {
    let d = number.strip_prefix('+')?;
    if !(6..=15).contains(&d.len()) || !all_digits(d) || d.starts_with('0') {
        return None;
    }
    if let Some(national) = d.strip_prefix('1') {
        // NANP: NPA (2-9)XX + NXX + XXXX.
        if national.len() != 10 || national.starts_with(['0', '1']) {
            return None;
        }
    }
    Some(d)
}

fn is_premium(d: &str) -> bool {
    if PREMIUM_PREFIXES.iter().any(|p| d.starts_with(p)) {
        return true;
    }
    // NANP 976 exchange: 1 NPA 976 XXXX.
    d.len() == 11 && d.starts_with('1') && d.get(4..7) == Some("976")
}

/// Whether the (valid) number is in the tenant's own country.
fn is_domestic(home_country: &str, d: &str) -> bool {
    if home_country.is_empty() || !d.starts_with(home_country) {
        return false;
    }
    if home_country == "1" {
        let npa = d.get(1..4).unwrap_or("");
        return !NANP_FOREIGN_AREA_CODES.contains(&npa);
    }
    true
}

/// Classify `number` (E.164 with `+`, or an emergency short code) for a
/// tenant whose country calling code is `home_country`.
pub fn classify(home_country: &str, number: &str) -> NumberClass {
    if EMERGENCY.contains(&number) {
        return NumberClass::Emergency;
    }
    let Some(d) = e164_digits(number) else {
        return NumberClass::Invalid;
    };
    if is_premium(d) {
        NumberClass::Premium
    } else if is_domestic(home_country, d) {
        NumberClass::Domestic
    } else {
        NumberClass::International
    }
}

/// Decide whether a tenant with `policy` may dial `number`. See module docs.
pub fn check(policy: &DialPolicy, number: &str) -> Result<(), Blocked> {
    let block = |reason| Err(Blocked { reason });
    let class = policy.classify(number);
    let d = match class {
        NumberClass::Emergency => return Ok(()),
        NumberClass::Invalid => return block(BlockReason::InvalidNumber),
        _ => match e164_digits(number) {
            Some(d) => d,
            None => return block(BlockReason::InvalidNumber),
        },
    };
    match class {
        NumberClass::Premium => {
            if !policy.allow_premium {
                return block(BlockReason::Premium);
            }
            if !policy.allow_international && !is_domestic(&policy.home_country, d) {
                return block(BlockReason::International);
            }
        }
        NumberClass::International if !policy.allow_international => {
            return block(BlockReason::International);
        }
        _ => {}
    }
    if !policy.allowed_prefixes.is_empty()
        && !policy
            .allowed_prefixes
            .iter()
            .map(|p| p.strip_prefix('+').unwrap_or(p))
            .any(|p| !p.is_empty() && d.starts_with(p))
    {
        return block(BlockReason::NotAllowedPrefix);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(home: &str) -> DialPolicy {
        DialPolicy {
            home_country: home.into(),
            allowed_prefixes: vec![],
            allow_international: false,
            allow_premium: false,
        }
    }

    #[test]
    fn classification_table() {
        use NumberClass::*;
        let cases = [
            ("1", "+12125551234", Domestic),
            ("1", "+14165551234", Domestic),      // Toronto
            ("1", "+17875551234", Domestic),      // Puerto Rico
            ("1", "+18765551234", International), // Jamaica
            ("1", "+18095551234", International), // Dominican Republic
            ("1", "+19005551234", Premium),
            ("1", "+12129761234", Premium), // 976 exchange
            ("1", "+442071234567", International),
            ("1", "+12125551", Invalid),    // NANP too short
            ("1", "+11125551234", Invalid), // NPA starting with 1
            ("44", "+442071234567", Domestic),
            ("44", "+447700900123", Domestic), // mobile
            ("44", "+449098790000", Premium),
            ("44", "+448712345678", Premium),
            ("44", "+447012345678", Premium),
            ("44", "+12125551234", International),
            ("44", "+18765551234", International),
            ("44", "+4930123456", International),
            ("44", "+49900123456", Premium),
            ("44", "+881612345678", Premium), // Iridium
            ("44", "+97912345678", Premium),
            ("44", "+5378123456", Premium), // Cuba
            ("44", "+6831234567", Premium), // Niue
            ("44", "112", Emergency),
            ("1", "911", Emergency),
            ("44", "999", Emergency),
            ("44", "02071234567", Invalid),
            ("44", "+0123456789", Invalid),
            ("44", "+44 20 7123 4567", Invalid),
            ("44", "+4412", Invalid),
            ("44", "+1234567890123456", Invalid), // 16 digits
            ("44", "", Invalid),
            ("44", "+", Invalid),
            ("44", "+٣٣٣٣٣٣٣", Invalid), // non-ASCII digits
        ];
        for (home, num, want) in cases {
            assert_eq!(classify(home, num), want, "{home} {num}");
        }
    }

    #[test]
    fn default_policy_blocks_premium_and_international() {
        let p = policy("1");
        assert_eq!(check(&p, "+12125551234"), Ok(()));
        assert_eq!(check(&p, "911"), Ok(()));
        let r = |n| check(&p, n).unwrap_err().reason;
        assert_eq!(r("+19005551234"), BlockReason::Premium);
        assert_eq!(r("+18765551234"), BlockReason::International);
        assert_eq!(r("+442071234567"), BlockReason::International);
        assert_eq!(r("garbage"), BlockReason::InvalidNumber);
    }

    #[test]
    fn premium_needs_international_when_foreign() {
        let mut p = policy("44");
        p.allow_premium = true;
        assert_eq!(check(&p, "+449098790000"), Ok(()), "domestic premium");
        assert_eq!(
            check(&p, "+881612345678").unwrap_err().reason,
            BlockReason::International
        );
        p.allow_international = true;
        assert_eq!(check(&p, "+881612345678"), Ok(()));
        p.allow_premium = false;
        assert_eq!(
            check(&p, "+881612345678").unwrap_err().reason,
            BlockReason::Premium
        );
        assert_eq!(check(&p, "+33142685300"), Ok(()));
    }

    #[test]
    fn allowed_prefixes_narrow_but_never_widen() {
        let mut p = policy("1");
        p.allowed_prefixes = vec!["+1212".into(), "44".into()];
        assert_eq!(check(&p, "+12125551234"), Ok(()));
        assert_eq!(
            check(&p, "+13125551234").unwrap_err().reason,
            BlockReason::NotAllowedPrefix
        );
        // +44 is whitelisted but international is still off.
        assert_eq!(
            check(&p, "+442071234567").unwrap_err().reason,
            BlockReason::International
        );
        p.allow_international = true;
        assert_eq!(check(&p, "+442071234567"), Ok(()));
        assert_eq!(
            check(&p, "+33142685300").unwrap_err().reason,
            BlockReason::NotAllowedPrefix
        );
        // Emergency is never blocked by the whitelist.
        assert_eq!(check(&p, "911"), Ok(()));
    }

    #[test]
    fn json_roundtrip_and_validation() {
        let p = DialPolicy::from_json(
            r#"{"home_country":"44","allowed_prefixes":["+44"],"allow_international":false,"allow_premium":false}"#,
        )
        .unwrap();
        assert_eq!(p.home_country, "44");
        let back: DialPolicy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        // Defaults are the safe side.
        let d = DialPolicy::from_json(r#"{"home_country":"1"}"#).unwrap();
        assert!(!d.allow_international && !d.allow_premium && d.allowed_prefixes.is_empty());
        for bad in [
            r#"{"home_country":"+44"}"#,
            r#"{"home_country":"0"}"#,
            r#"{"home_country":"1234"}"#,
            r#"{"home_country":""}"#,
            r#"{"home_country":"1","allowed_prefixes":["12a"]}"#,
            r#"{"home_country":"1","allowed_prefixes":[""]}"#,
            r#"{"home_country":"1","allow_everything":true}"#,
            r#"{}"#,
            "not json",
        ] {
            assert!(
                matches!(DialPolicy::from_json(bad), Err(GuardError::Policy(_))),
                "accepted {bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_premium_never_allowed_by_default(s in "\\PC{0,24}", digits in "[0-9]{0,16}") {
            let p = policy("44");
            let _ = check(&p, &s);
            let n = format!("+{digits}");
            if classify("44", &n) == NumberClass::Premium {
                prop_assert!(check(&p, &n).is_err());
            }
        }
    }
}
