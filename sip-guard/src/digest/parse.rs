//! Parser for `Authorization` / `Proxy-Authorization` header values.
//!
//! Exists because this is the first code that touches attacker-controlled
//! credentials on the SIP edge: it must accept everything RFC 3261 section 25.1
//! allows (quoted strings with backslash escapes, unquoted tokens, parameters in
//! any order, case-insensitive names, linear white space) and reject everything
//! else with an error, never a panic, within a fixed size budget.

use crate::GuardError;

/// Largest header value accepted by [`parse_authorization`], in bytes.
pub const MAX_HEADER_LEN: usize = 4096;

/// Upper bound on the number of `name=value` pairs, known or not.
const MAX_PARAMS: usize = 32;

/// Digest hash algorithm named in the `algorithm` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 2617/3261; the default when the parameter is absent).
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
}

/// The digest parameters of a parsed `Authorization` header.
///
/// `algorithm` is `None` when the header named an algorithm this crate does not
/// support (for example `SHA-512-256` or `MD5-sess`); verification then fails.
/// Unknown parameters are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestResponse {
    /// `username` (unescaped).
    pub username: String,
    /// `realm` (unescaped).
    pub realm: String,
    /// `nonce` as issued by [`crate::DigestAuthenticator::challenge`].
    pub nonce: String,
    /// `uri` (the digest-uri; required).
    pub uri: String,
    /// `response`: hex digest computed by the client.
    pub response: String,
    /// `algorithm`; `Some(Md5)` when absent, `None` when unsupported.
    pub algorithm: Option<Algorithm>,
    /// `qop` if present.
    pub qop: Option<String>,
    /// `nc` (nonce count) if present.
    pub nc: Option<String>,
    /// `cnonce` if present.
    pub cnonce: Option<String>,
    /// `opaque` if present (this crate does not issue one).
    pub opaque: Option<String>,
    /// `userhash=true` was sent (RFC 7616 3.4.4); not supported, verification fails.
    pub userhash: bool,
}

/// Parse an `Authorization` or `Proxy-Authorization` header value
/// (`Digest username="..", realm="..", ...`).
///
/// Never panics. Fails on values longer than [`MAX_HEADER_LEN`], non-`Digest`
/// schemes, syntax errors, duplicate parameters, more than 32 parameters, or a
/// missing `username`, `realm`, `nonce`, `uri` or `response`.
pub fn parse_authorization(value: &str) -> Result<DigestResponse, GuardError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(GuardError::HeaderTooLarge {
            len: value.len(),
            limit: MAX_HEADER_LEN,
        });
    }
    let mut cur = Cursor { s: value, pos: 0 };
    cur.skip_lws();
    let scheme = cur.token();
    if scheme.is_empty() {
        return Err(GuardError::Malformed("missing scheme"));
    }
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(GuardError::UnsupportedScheme);
    }
    if !cur.skip_lws() {
        return Err(GuardError::Malformed("missing space after scheme"));
    }

    let mut fields = Fields::default();
    let mut count = 0usize;
    loop {
        cur.skip_lws();
        if cur.at_end() {
            break;
        }
        count += 1;
        if count > MAX_PARAMS {
            return Err(GuardError::Malformed("too many parameters"));
        }
        let name = cur.token();
        if name.is_empty() {
            return Err(GuardError::Malformed("expected parameter name"));
        }
        cur.skip_lws();
        if !cur.eat('=') {
            return Err(GuardError::Malformed("expected '=' after parameter name"));
        }
        cur.skip_lws();
        let value = if cur.peek() == Some('"') {
            cur.quoted_string()?
        } else {
            let t = cur.token();
            if t.is_empty() {
                return Err(GuardError::Malformed("expected parameter value"));
            }
            t.to_owned()
        };
        fields.set(name, value)?;
        cur.skip_lws();
        if cur.at_end() {
            break;
        }
        if !cur.eat(',') {
            return Err(GuardError::Malformed("expected ',' between parameters"));
        }
    }
    fields.finish()
}

#[derive(Default)]
struct Fields {
    username: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    algorithm: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
    userhash: Option<String>,
}

impl Fields {
    fn set(&mut self, name: &str, value: String) -> Result<(), GuardError> {
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => &mut self.username,
            "realm" => &mut self.realm,
            "nonce" => &mut self.nonce,
            "uri" => &mut self.uri,
            "response" => &mut self.response,
            "algorithm" => &mut self.algorithm,
            "qop" => &mut self.qop,
            "nc" => &mut self.nc,
            "cnonce" => &mut self.cnonce,
            "opaque" => &mut self.opaque,
            "userhash" => &mut self.userhash,
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(GuardError::Malformed("duplicate parameter"));
        }
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<DigestResponse, GuardError> {
        let algorithm = match self.algorithm.as_deref() {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        };
        Ok(DigestResponse {
            username: self.username.ok_or(GuardError::MissingParam("username"))?,
            realm: self.realm.ok_or(GuardError::MissingParam("realm"))?,
            nonce: self.nonce.ok_or(GuardError::MissingParam("nonce"))?,
            uri: self.uri.ok_or(GuardError::MissingParam("uri"))?,
            response: self.response.ok_or(GuardError::MissingParam("response"))?,
            algorithm,
            qop: self.qop,
            nc: self.nc,
            cnonce: self.cnonce,
            opaque: self.opaque,
            userhash: self
                .userhash
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        })
    }
}

/// A byte position into the header value; only ever advanced past whole chars.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn eat(&mut self, want: char) -> bool {
        if self.peek() == Some(want) {
            self.bump(want);
            true
        } else {
            false
        }
    }

    /// Skip spaces, tabs and line folding; returns whether anything was skipped.
    fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, ' ' | '\t' | '\r' | '\n') {
                self.bump(c);
            } else {
                break;
            }
        }
        self.pos != start
    }

    /// RFC 3261 `token` characters (plus `/`, `:`, `@`, `=`-free extras some
    /// phones send unquoted, such as `/` in a uri or base64 nonce).
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~' | '/' | ':' | '@'
                )
            {
                self.bump(c);
            } else {
                break;
            }
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// A quoted-string starting at the current `"`, with `\x` escapes removed.
    fn quoted_string(&mut self) -> Result<String, GuardError> {
        if !self.eat('"') {
            return Err(GuardError::Malformed("expected quoted string"));
        }
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(GuardError::Malformed("unterminated quoted string")),
                Some('"') => {
                    self.bump('"');
                    return Ok(out);
                }
                Some('\\') => {
                    self.bump('\\');
                    match self.peek() {
                        Some(c) if c != '\r' && c != '\n' => {
                            self.bump(c);
                            out.push(c);
                        }
                        _ => return Err(GuardError::Malformed("bad escape in quoted string")),
                    }
                }
                Some(c) if c.is_control() && c != '\t' => {
                    return Err(GuardError::Malformed("control character in quoted string"));
                }
                Some(c) => {
                    self.bump(c);
                    out.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC7616: &str = r#"Digest username="Mufasa",
       realm="http-auth@example.org",
       uri="/dir/index.html",
       algorithm=SHA-256,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       nc=00000001,
       cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
       qop=auth,
       response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;

    #[test]
    fn parses_rfc7616_example() {
        let d = parse_authorization(RFC7616).unwrap();
        assert_eq!(d.username, "Mufasa");
        assert_eq!(d.realm, "http-auth@example.org");
        assert_eq!(d.uri, "/dir/index.html");
        assert_eq!(d.algorithm, Some(Algorithm::Sha256));
        assert_eq!(d.nc.as_deref(), Some("00000001"));
        assert_eq!(d.qop.as_deref(), Some("auth"));
        assert_eq!(
            d.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
        assert!(!d.userhash);
    }

    #[test]
    fn case_insensitive_names_any_order_and_escapes() {
        let d = parse_authorization(
            r#"digest RESPONSE="ab" ,URI="sip:a@b",Nonce=xyz,Realm="r\"e\\al",UserName="a\lice""#,
        )
        .unwrap();
        assert_eq!(d.username, "alice");
        assert_eq!(d.realm, "r\"e\\al");
        assert_eq!(d.nonce, "xyz");
        assert_eq!(d.uri, "sip:a@b");
        assert_eq!(d.response, "ab");
        assert_eq!(d.algorithm, Some(Algorithm::Md5), "MD5 is the default");
    }

    #[test]
    fn unsupported_algorithm_is_none_and_userhash_flag() {
        let d = parse_authorization(
            r#"Digest username="a",realm="r",nonce="n",uri="u",response="x",algorithm=MD5-sess,userhash=true,foo="bar""#,
        )
        .unwrap();
        assert_eq!(d.algorithm, None);
        assert!(d.userhash);
    }

    #[test]
    fn rejects_bad_input() {
        let cases = [
            "",
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Digest",
            r#"Digest username="a""#,
            r#"Digest username="a" realm="r""#,
            r#"Digest username="a,realm="r""#,
            r#"Digest username="a",username="b",realm="r",nonce="n",uri="u",response="x""#,
            r#"Digest username=,realm="r""#,
            r#"Digest ="a""#,
            "Digest username=\"a\\",
        ];
        for c in cases {
            assert!(parse_authorization(c).is_err(), "accepted {c:?}");
        }
        assert_eq!(
            parse_authorization(r#"Digest realm="r",nonce="n",uri="u",response="x""#),
            Err(GuardError::MissingParam("username"))
        );
    }

    #[test]
    fn size_limit() {
        let big = format!(r#"Digest username="{}""#, "a".repeat(MAX_HEADER_LEN));
        assert!(matches!(
            parse_authorization(&big),
            Err(GuardError::HeaderTooLarge { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_strings(s in "\\PC{0,300}") {
            let _ = parse_authorization(&s);
        }

        #[test]
        fn never_panics_on_digest_like_input(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("Digest ".to_owned()), Just("username".to_owned()), Just("=".to_owned()),
                    Just("\"".to_owned()), Just("\\".to_owned()), Just(",".to_owned()),
                    Just(" ".to_owned()), Just("\r\n ".to_owned()), "[a-zA-Z0-9/+=]{0,8}",
                    "\\PC{0,4}",
                ],
                0..40,
            )
        ) {
            let _ = parse_authorization(&parts.concat());
        }

        #[test]
        fn roundtrips_quoted_values(user in "\\PC{0,40}", realm in "[ -~]{0,40}") {
            let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            // Control characters other than tab are rejected by design; skip them.
            prop_assume!(!user.chars().any(|c| c.is_control() && c != '\t'));
            let h = format!(
                "Digest username=\"{}\", realm=\"{}\", nonce=\"n\", uri=\"sip:x\", response=\"00\"",
                esc(&user), esc(&realm)
            );
            let d = parse_authorization(&h).unwrap();
            prop_assert_eq!(d.username, user);
            prop_assert_eq!(d.realm, realm);
        }
    }
}
