//! A bound on a CEL expression's size and nesting, found in one pass over its tokens before
//! the parser sees it. The parser, its tree visitor, the evaluator and the drop of the tree
//! all recurse once per level, so an expression that the input controls must never reach
//! them deeper than is safe: a chain of a million `+` terms is refused here, by a loop.

/// What one expression may be, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    /// Longest source, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting (see [`check`]).
    pub max_depth: usize,
}

/// Why an expression was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The source is longer than allowed.
    #[error("the expression is {bytes} bytes long, more than the limit of {limit}")]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The expression nests deeper than allowed.
    #[error(
        "the expression nests deeper than the limit of {limit} levels (each chained operator, \
         member access, call and bracket is a level; join long chains of `&&`/`||` instead)"
    )]
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// One bracket group being read (the whole expression is the outermost one).
#[derive(Debug, Default)]
struct Group {
    /// Operators chained in the current segment (between `,`, `&&`, `||`, `?` and `:`): the
    /// grammar's left-recursive rules nest one level for each.
    ops: usize,
    /// Deepest group closed inside the current segment.
    child: usize,
    /// Deepest segment finished so far.
    deepest: usize,
    /// `&&` and `||` in the group: the parser balances their chains, so they cost log2.
    logical: usize,
    /// `?` in the group: the conditional nests to the right.
    conditionals: usize,
}

impl Group {
    fn end_segment(&mut self) {
        self.deepest = self.deepest.max(self.ops + self.child);
        self.ops = 0;
        self.child = 0;
    }

    /// An upper bound on the depth of the tree this group becomes.
    fn depth(mut self) -> usize {
        self.end_segment();
        let balanced = usize::BITS - self.logical.leading_zeros();
        1 + self.deepest + balanced as usize + self.conditionals
    }
}

/// Checks `source` against `limits` without recursion: an upper bound on the depth of its
/// syntax tree must stay within `max_depth`. The bound counts, on the deepest path, every
/// bracket group, every chained binary or unary operator, member access, index and call, each
/// `?`, and log2 of the `&&`/`||` terms of a group (the parser builds a balanced tree for
/// them, so long flat conjunctions stay cheap). Lexical errors are left to the parser.
pub fn check(source: &str, limits: ShapeLimits) -> Result<(), ShapeError> {
    if source.len() > limits.max_bytes {
        return Err(ShapeError::TooLong {
            bytes: source.len(),
            limit: limits.max_bytes,
        });
    }
    let too_deep = ShapeError::TooDeep {
        limit: limits.max_depth,
    };
    let bytes = source.as_bytes();
    let mut stack: Vec<Group> = vec![Group::default()];
    // Whether the previous token ends an operand (so `(` and `[` are a call or an index).
    let mut after_operand = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let group = stack.last_mut().ok_or_else(|| too_deep.clone())?;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                i += 1;
                continue;
            }
            b'/' if next == Some(b'/') => {
                i = skip_line(bytes, i);
                continue;
            }
            b'\'' | b'"' => {
                // A string the lexer would not take whole is read as code from its quote on
                // (the lexer skips what it cannot read and goes on): counted, never skipped.
                match skip_string(bytes, i, false) {
                    Some(end) => {
                        i = end;
                        after_operand = true;
                        continue;
                    }
                    None => {
                        group.ops += 1;
                        after_operand = false;
                    }
                }
            }
            b'0'..=b'9' => {
                i = skip_number(bytes, i);
                after_operand = true;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &source[start..i];
                let prefixed = matches!(bytes.get(i), Some(b'\'' | b'"')) && is_string_prefix(word);
                let string = prefixed
                    .then(|| skip_string(bytes, i, word.contains(['r', 'R'])))
                    .flatten();
                if let Some(end) = string {
                    i = end;
                    after_operand = true;
                } else if word == "in" {
                    group.ops += 1;
                    after_operand = false;
                } else {
                    after_operand = true;
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                if after_operand && b != b'{' {
                    group.ops += 1;
                }
                if stack.len() >= limits.max_depth {
                    return Err(too_deep);
                }
                stack.push(Group::default());
                after_operand = false;
            }
            b')' | b']' | b'}' => {
                if stack.len() > 1 {
                    let closed = stack.pop().map_or(0, Group::depth);
                    if closed > limits.max_depth {
                        return Err(too_deep);
                    }
                    if let Some(parent) = stack.last_mut() {
                        parent.child = parent.child.max(closed);
                    }
                }
                after_operand = true;
            }
            b',' | b':' => {
                group.end_segment();
                after_operand = false;
            }
            b'?' => {
                group.end_segment();
                group.conditionals += 1;
                after_operand = false;
            }
            b'&' | b'|' if next == Some(b) => {
                group.end_segment();
                group.logical += 1;
                after_operand = false;
                i += 2;
                continue;
            }
            _ => {
                // `.`, arithmetic, comparison and negation: each nests one level.
                group.ops += 1;
                after_operand = false;
                if matches!(next, Some(b'=')) && matches!(b, b'<' | b'>' | b'=' | b'!') {
                    i += 1;
                }
            }
        }
        if group_ops_exceed(&stack, limits.max_depth) {
            return Err(too_deep);
        }
        i += 1;
    }
    let mut depth = 0;
    while let Some(group) = stack.pop() {
        depth = depth.max(group.depth());
    }
    if depth > limits.max_depth {
        return Err(too_deep);
    }
    Ok(())
}

/// A segment that alone chains more operators than the limit can stop the scan at once.
fn group_ops_exceed(stack: &[Group], max_depth: usize) -> bool {
    stack
        .last()
        .is_some_and(|g| g.ops + g.child > max_depth || g.conditionals > max_depth)
}

/// The prefixes CEL's lexer takes before a quote: raw, bytes, and raw bytes (`br`, not `rb`).
fn is_string_prefix(word: &str) -> bool {
    matches!(word, "r" | "R" | "b" | "B" | "br" | "bR" | "Br" | "BR")
}

fn skip_line(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' {
        i += 1;
    }
    i
}

/// Skips a number as CEL's lexer reads one (`12`, `0x1F`, `3u`, `1.5`, `2e-3`): what follows
/// it, letters included, is another token, as it is for the lexer (`1in` is `1 in`).
fn skip_number(bytes: &[u8], mut i: usize) -> usize {
    let digits = |mut j: usize, hex: bool| {
        while bytes
            .get(j)
            .is_some_and(|c| c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()))
        {
            j += 1;
        }
        j
    };
    let is_digit = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_digit);
    if bytes[i] == b'0'
        && matches!(bytes.get(i + 1), Some(b'x' | b'X'))
        && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i = digits(i + 2, true);
        if matches!(bytes.get(i), Some(b'u' | b'U')) {
            i += 1;
        }
        return i;
    }
    i = digits(i, false);
    let mut float = false;
    if bytes.get(i) == Some(&b'.') && is_digit(i + 1) {
        i = digits(i + 1, false);
        float = true;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        if is_digit(i + 1 + sign) {
            i = digits(i + 1 + sign, false);
            float = true;
        }
    }
    if !float && matches!(bytes.get(i), Some(b'u' | b'U')) {
        i += 1;
    }
    i
}

/// The length of the escape whose backslash is at `i`, if CEL's lexer takes it as one.
fn escape_len(bytes: &[u8], i: usize) -> Option<usize> {
    let hex = |from: usize, n: usize| {
        bytes
            .get(from..from + n)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    };
    let octal = bytes
        .get(i + 2..i + 4)
        .is_some_and(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
    match *bytes.get(i + 1)? {
        b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'"' | b'\'' | b'\\' | b'?' | b'`' => {
            Some(2)
        }
        b'0'..=b'3' if octal => Some(4),
        b'x' | b'X' if hex(i + 2, 2) => Some(4),
        b'u' if hex(i + 2, 4) => Some(6),
        b'U' if hex(i + 2, 8) => Some(10),
        _ => None,
    }
}

/// The end of the string literal whose quote is at `i` (one or three quotes), if CEL's lexer
/// reads it whole: closed, with valid escapes (unless `raw`), and without a line break in a
/// one-quote string. `None` for anything else, which the caller then reads as code.
fn skip_string(bytes: &[u8], i: usize, raw: bool) -> Option<usize> {
    let quote = bytes[i];
    let three = [quote, quote, quote];
    let triple = bytes.get(i..i + 3) == Some(&three[..]);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < bytes.len() {
        let c = bytes[j];
        if c == b'\\' && !raw {
            j += escape_len(bytes, j)?;
            continue;
        }
        if triple {
            if bytes.get(j..j + 3) == Some(&three[..]) {
                return Some(j + 3);
            }
        } else if c == quote {
            return Some(j + 1);
        } else if c == b'\n' || c == b'\r' {
            return None;
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ShapeLimits = ShapeLimits {
        max_bytes: 1 << 30,
        max_depth: 32,
    };

    fn deep(source: &str) -> bool {
        matches!(check(source, LIMITS), Err(ShapeError::TooDeep { .. }))
    }

    #[test]
    fn ordinary_conditions_pass() {
        for source in [
            "event.type == 'trial.rated' && event.attrs.rating >= 4",
            "contact.purchases.exists(p, p.product == 'A')",
            "contact.attrs.age > 30 ? contact.tier == 'A' : contact.tier in ['A', 'B']",
            "size(contact.tags) > 0 && !('vip' in contact.tags)",
            "1.5e+3 > 2e-3 && 0x1F == 31u",
        ] {
            assert_eq!(check(source, LIMITS), Ok(()), "{source}");
        }
    }

    #[test]
    fn long_flat_conjunctions_pass_because_the_parser_balances_them() {
        let clause = "contact.attrs.segment == 'x'";
        let source = vec![clause; 2000].join(" && ");
        assert_eq!(check(&source, LIMITS), Ok(()));
    }

    #[test]
    fn chains_and_nesting_past_the_limit_are_refused() {
        assert!(deep(&vec!["1"; 40].join(" + ")));
        assert!(deep(&format!("{}1{}", "(".repeat(40), ")".repeat(40))));
        assert!(deep(&format!("a{}", ".b".repeat(40))));
        assert!(deep(&format!("{}true", "!".repeat(40))));
        assert!(deep(&format!("{}x{}", "size(".repeat(40), ")".repeat(40))));
        assert!(deep(&vec!["a ? b"; 40].join(" : ")));
        assert!(!deep(&vec!["1"; 20].join(" + ")));
    }

    #[test]
    fn brackets_inside_strings_and_comments_do_not_count() {
        let noise = "(((((((((((((((((((((((((((((((((((((((((((";
        for source in [
            format!("'{noise}' == \"{noise}\""),
            format!("r'{noise}\\' == b'''{noise}'''"),
            format!("true // {noise}\n"),
        ] {
            assert_eq!(check(&source, LIMITS), Ok(()), "{source}");
        }
    }

    /// Where the lexer reads code, the check counts it: letters after a number are a token of
    /// their own, and a string the lexer would not take whole is code from its quote on.
    #[test]
    fn what_the_lexer_reads_as_code_is_counted() {
        let chain = vec!["1"; 40].join("+");
        for source in [
            format!("{}1", "1in ".repeat(40)),
            format!("'\r{chain}"),
            format!("'\\q{chain}"),
            format!("'\\\n{chain}"),
            format!("''''{chain}"),
            format!("rb'x' + {chain}"),
            format!("'unterminated {chain}"),
            format!(r#""""never closed {chain}"#),
            format!("1.{}", ".x".repeat(40)),
            format!("0x{}", "+1".repeat(40)),
            format!("1e{}", "+1".repeat(40)),
        ] {
            assert!(deep(&source), "{source:?}");
        }
        for source in [
            r"'\n\t\x41\u0041\U00000041\101\'' == 'x'",
            r"r'\q' == b'\x00' && br'\q' != ''",
            "'''multi\nline''' == \"\"\"x\"\"\"",
            "1.5e+3 > 2e-3 && 0x1F == 31u && .5 < 1.0",
        ] {
            assert_eq!(check(source, LIMITS), Ok(()), "{source}");
        }
    }

    #[test]
    fn too_long_is_refused_before_anything_else() {
        let limits = ShapeLimits {
            max_bytes: 10,
            max_depth: 32,
        };
        assert_eq!(
            check("contact.tier == 'A'", limits),
            Err(ShapeError::TooLong {
                bytes: 19,
                limit: 10
            })
        );
    }

    #[test]
    fn a_million_terms_are_refused_on_a_small_stack_without_recursion() {
        let chain = vec!["1"; 1_000_000].join("+");
        let parens = format!("{}1{}", "(".repeat(1_000_000), ")".repeat(1_000_000));
        let handle = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let big = ShapeLimits {
                    max_bytes: usize::MAX,
                    max_depth: 64,
                };
                (check(&chain, big), check(&parens, big))
            })
            .expect("thread");
        let (a, b) = handle.join().expect("no overflow");
        assert!(matches!(a, Err(ShapeError::TooDeep { .. })));
        assert!(matches!(b, Err(ShapeError::TooDeep { .. })));
    }
}
