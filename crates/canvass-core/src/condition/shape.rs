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
                i = skip_string(bytes, i, false);
                after_operand = true;
                continue;
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
                if matches!(bytes.get(i), Some(b'\'' | b'"')) && is_string_prefix(word) {
                    let raw = word.contains(['r', 'R']);
                    i = skip_string(bytes, i, raw);
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

fn is_string_prefix(word: &str) -> bool {
    matches!(
        word,
        "r" | "R" | "b" | "B" | "rb" | "rB" | "Rb" | "RB" | "br" | "bR" | "Br" | "BR"
    )
}

fn skip_line(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' {
        i += 1;
    }
    i
}

/// Skips a number: at most one `.` and one exponent sign followed by a digit (`1e+5` is one
/// token, not an addition). Anything else ends it, so that nothing the lexer would read as an
/// operator is hidden inside a number here.
fn skip_number(bytes: &[u8], mut i: usize) -> usize {
    let hex = bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X'));
    let (mut dot, mut sign) = (false, false);
    while i < bytes.len() {
        let c = bytes[i];
        let exponent_sign = !hex
            && !sign
            && matches!(c, b'+' | b'-')
            && matches!(bytes.get(i.wrapping_sub(1)), Some(b'e' | b'E'))
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if c.is_ascii_alphanumeric() || c == b'_' {
            i += 1;
        } else if c == b'.' && !dot && !hex {
            dot = true;
            i += 1;
        } else if exponent_sign {
            sign = true;
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Skips a quoted string starting at `i` (one or three quotes), honouring escapes unless
/// `raw`. An unterminated string runs to the end (the parser reports it).
fn skip_string(bytes: &[u8], i: usize, raw: bool) -> usize {
    let quote = bytes[i];
    let triple = bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < bytes.len() {
        let c = bytes[j];
        if c == b'\\' && !raw {
            j += 2;
            continue;
        }
        if c == quote {
            if !triple {
                return j + 1;
            }
            if bytes.get(j..j + 3) == Some(&[quote, quote, quote][..]) {
                return j + 3;
            }
        } else if c == b'\n' && !triple {
            return j;
        }
        j += 1;
    }
    bytes.len()
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
