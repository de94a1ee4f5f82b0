//! Purpose conditions: a deliberately small language, never raw SQL.
//!
//! `status = 'closed'`, `status in ('closed', 'void')`, `closed_at is not null`,
//! `tier != 'vip' and score < 10`. Column names are validated like every identifier; literals are
//! always bound as parameters by the SQL builder. Anything else — functions, sub-queries, `or`,
//! comments, semicolons — is rejected.

use std::fmt;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Literal {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Compare(CmpOp, Literal),
    In(Vec<Literal>),
    IsNull,
    IsNotNull,
}

/// One `column <test>` term.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub column: String,
    pub test: Test,
}

/// A conjunction of comparisons: the purpose lapses only for rows where all of them hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub terms: Vec<Comparison>,
}

impl Condition {
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.column.as_str())
    }

    /// The text literals compared with `column` (by a comparison or in a list).
    pub fn texts_for<'a>(&'a self, column: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.terms.iter().filter(move |t| t.column == column).flat_map(|t| {
            let lits: Vec<&Literal> = match &t.test {
                Test::Compare(_, l) => vec![l],
                Test::In(ls) => ls.iter().collect(),
                _ => vec![],
            };
            lits.into_iter().filter_map(|l| match l {
                Literal::Text(s) => Some(s.as_str()),
                _ => None,
            })
        })
    }
}

/// What a text literal compared with a date or timestamp column must be: a whole date
/// (`YYYY-MM-DD`), a date and time (`YYYY-MM-DD HH:MM:SS[.f]`, also with `T`) or RFC 3339.
/// Anything else is read differently by each database, or not at all: SQLite's `julianday`
/// reads `'1995'` as Julian day 1995 (4708 BC), and `'31/12/1995'` as no time.
pub const TIME_LITERAL_SHAPES: &str = "a date as 'YYYY-MM-DD', a date and time as 'YYYY-MM-DD HH:MM:SS', or RFC 3339";

pub fn is_time_literal(s: &str) -> bool {
    // Digits where the shape has them, two for each field (chrono also reads `1995-1-1`, which
    // SQLite does not).
    let shape = |pattern: &str| {
        s.len() >= pattern.len()
            && s.bytes().zip(pattern.bytes()).all(|(c, p)| {
                if p == b'9' {
                    c.is_ascii_digit()
                } else {
                    c == p || p == b'T' && c == b' '
                }
            })
    };
    if !shape("9999-99-99") || s.len() > 10 && !shape("9999-99-99T99:99:99") {
        return false;
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        || ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .any(|f| chrono::NaiveDateTime::parse_from_str(s, f).is_ok())
        || chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                write!(f, " and ")?;
            }
            write!(f, "{}", t.column)?;
            match &t.test {
                Test::Compare(op, lit) => write!(f, " {} {}", op.sql(), show(lit))?,
                Test::In(list) => {
                    let items: Vec<String> = list.iter().map(show).collect();
                    write!(f, " in ({})", items.join(", "))?
                }
                Test::IsNull => write!(f, " is null")?,
                Test::IsNotNull => write!(f, " is not null")?,
            }
        }
        Ok(())
    }
}

fn show(l: &Literal) -> String {
    match l {
        Literal::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Literal::Int(i) => i.to_string(),
        Literal::Float(x) => x.to_string(),
        Literal::Bool(b) => b.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
}

fn lex(input: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1
                        }
                    }
                }
                if s.len() > 1024 {
                    return Err("string literal longer than 1024 bytes".into());
                }
                out.push(Tok::Str(s));
            }
            '=' => {
                out.push(Tok::Op(CmpOp::Eq));
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(CmpOp::Ne));
                i += 2
            }
            '<' => match chars.get(i + 1) {
                Some('=') => {
                    out.push(Tok::Op(CmpOp::Le));
                    i += 2
                }
                Some('>') => {
                    out.push(Tok::Op(CmpOp::Ne));
                    i += 2
                }
                _ => {
                    out.push(Tok::Op(CmpOp::Lt));
                    i += 1
                }
            },
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::Op(CmpOp::Ge));
                    i += 2
                } else {
                    out.push(Tok::Op(CmpOp::Gt));
                    i += 1
                }
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character '{other}'")),
        }
    }
    Ok(out)
}

fn literal(tok: Option<Tok>) -> Result<Literal, String> {
    match tok {
        Some(Tok::Str(s)) => Ok(Literal::Text(s)),
        Some(Tok::Num(n)) => {
            if let Ok(i) = n.parse::<i64>() {
                Ok(Literal::Int(i))
            } else {
                n.parse::<f64>().map(Literal::Float).map_err(|_| format!("invalid number '{n}'"))
            }
        }
        Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
        Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
        Some(other) => Err(format!("expected a literal ('text', a number, true or false), found {}", describe(&other))),
        None => Err("expected a literal at the end of the condition".into()),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Str(_) => "a string".into(),
        Tok::Num(n) => format!("'{n}'"),
        Tok::Op(op) => format!("'{}'", op.sql()),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
    }
}

fn kw(t: &Option<Tok>, word: &str) -> bool {
    matches!(t, Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(word))
}

/// Parses a condition. Column names are checked by [`crate::policy::valid_identifier`] later,
/// with the rest of the policy's identifiers.
pub fn parse(input: &str) -> Result<Condition, String> {
    let wrap = |e: String| format!("invalid condition '{input}': {e}");
    let toks = lex(input).map_err(wrap)?;
    let mut it = toks.into_iter().peekable();
    let mut terms = Vec::new();
    loop {
        let column = match it.next() {
            Some(Tok::Ident(c)) => c,
            Some(other) => return Err(wrap(format!("expected a column name, found {}", describe(&other)))),
            None => return Err(wrap("expected a column name".into())),
        };
        let next = it.next();
        let test = match next {
            Some(Tok::Op(op)) => Test::Compare(op, literal(it.next()).map_err(wrap)?),
            ref t if kw(t, "is") => {
                let n = it.next();
                if kw(&n, "null") {
                    Test::IsNull
                } else if kw(&n, "not") && kw(&it.next(), "null") {
                    Test::IsNotNull
                } else {
                    return Err(wrap("expected 'is null' or 'is not null'".into()));
                }
            }
            ref t if kw(t, "in") => {
                if it.next() != Some(Tok::LParen) {
                    return Err(wrap("expected '(' after 'in'".into()));
                }
                let mut list = vec![literal(it.next()).map_err(wrap)?];
                loop {
                    match it.next() {
                        Some(Tok::Comma) => list.push(literal(it.next()).map_err(wrap)?),
                        Some(Tok::RParen) => break,
                        _ => return Err(wrap("expected ',' or ')' in the 'in' list".into())),
                    }
                }
                Test::In(list)
            }
            Some(other) => {
                return Err(wrap(format!(
                    "expected a comparison (=, !=, <, <=, >, >=, in, is null) after '{column}', found {}",
                    describe(&other)
                )))
            }
            None => return Err(wrap(format!("expected a comparison after '{column}'"))),
        };
        terms.push(Comparison { column, test });
        match it.next() {
            None => break,
            ref t if kw(t, "and") => continue,
            ref t if kw(t, "or") => {
                return Err(wrap("'or' is not supported: split the purpose in two, or use 'in (...)'".into()))
            }
            Some(other) => return Err(wrap(format!("expected 'and' or the end, found {}", describe(&other)))),
        }
    }
    Ok(Condition { terms })
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_literals_are_whole_dates() {
        for ok in [
            "1995-01-01",
            "1995-12-31 23:59:59",
            "1995-12-31 23:59:59.250",
            "1995-12-31T23:59:59",
            "1995-12-31T23:59:59Z",
            "1995-12-31T23:59:59+02:00",
        ] {
            assert!(super::is_time_literal(ok), "{ok}");
        }
        for bad in [
            "1995",
            "2000",
            "31/12/1995",
            "1995-1-1",
            "1995-13-01",
            "1995-12",
            "19950101",
            "now",
            " 1995-01-01",
            "1995-01-01 10",
            "1995-01-01x",
        ] {
            assert!(!super::is_time_literal(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn parses_the_supported_forms() {
        let c = parse("status = 'closed' and score <= 10 and tier in ('a', 'b''s') and x is not null").unwrap();
        assert_eq!(c.terms.len(), 4);
        assert_eq!(c.terms[0].test, Test::Compare(CmpOp::Eq, Literal::Text("closed".into())));
        assert_eq!(c.terms[2].test, Test::In(vec![Literal::Text("a".into()), Literal::Text("b's".into())]));
        assert_eq!(c.terms[3].test, Test::IsNotNull);
    }

    #[test]
    fn rejects_sql() {
        for bad in [
            "status = 'x'; DROP TABLE users",
            "status = 'x' or 1=1",
            "lower(status) = 'x'",
            "status = 'x' -- comment",
            "status = (select 1)",
            "status = 'unterminated",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
