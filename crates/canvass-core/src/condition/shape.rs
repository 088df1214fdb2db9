//! The shape of a CEL expression: its length, checked before it is parsed, and the depth of
//! its tree, measured on the tree the parser built. The parser, its visitor, the evaluator and
//! the drop of a tree all recurse once per level, and the parser bounds only bracketed levels
//! (a million-term `+` chain overflowed the stack). So the parse runs on a stack of its own,
//! sized by the length, and a tree deeper than the limit is measured and dropped there; only trees within the limit leave it, and those are safe to evaluate on
//! any thread. Measuring the parser's own tree, not a model of its lexer, leaves no input on
//! which the check and the parser disagree.

use std::sync::Arc;

use cel::{Env, IdedExpr, ParseErrors, common::ast::EntryExpr, common::ast::Expr};

/// What one expression may be, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    /// Longest source, in bytes.
    pub max_bytes: usize,
    /// Deepest tree.
    pub max_depth: usize,
}

/// Why an expression was refused for its shape.
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
    /// The stack to parse it on could not be had.
    #[error("cannot map {bytes} bytes of stack to parse the expression on")]
    NoStack {
        /// The size asked for.
        bytes: usize,
    },
    /// The expression nests deeper than allowed.
    #[error(
        "the expression nests {depth} levels deep, more than the limit of {limit} (each operator, \
         member access, call, comprehension and literal list or map is a level; chains of \
         `&&`/`||` are balanced, so they cost log2 of their terms)"
    )]
    TooDeep {
        /// Its depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
}

/// Stack the parse runs on, per byte of source: a `+` chain spells a level in two bytes and
/// the parser takes under 2 KiB a level (measured: 32,000 levels fit in 64 MiB), so 4 KiB a
/// byte leaves a margin of four. Only the pages a parse touches are ever used.
const PARSE_STACK_PER_BYTE: usize = 4 * 1024;

/// The least stack a parse gets (short expressions).
const PARSE_STACK_MIN: usize = 16 * 1024 * 1024;

/// Parses `source` with `env`'s parser (at most `parser_depth` bracketed levels) if it is
/// within `limits`: refused before parsing if too long, after it if its tree is too deep.
pub(super) fn parse(
    source: &str,
    env: &Arc<Env>,
    parser_depth: u16,
    limits: ShapeLimits,
) -> Result<Result<IdedExpr, ParseErrors>, ShapeError> {
    if source.len() > limits.max_bytes {
        return Err(ShapeError::TooLong {
            bytes: source.len(),
            limit: limits.max_bytes,
        });
    }
    let stack = source
        .len()
        .saturating_mul(PARSE_STACK_PER_BYTE)
        .max(PARSE_STACK_MIN);
    let parse = || {
        let parsed = env.parser().max_recursion_depth(parser_depth).parse(source);
        match &parsed {
            Ok(expr) => {
                let depth = depth(expr);
                if depth > limits.max_depth {
                    // Dropped here, on this stack: dropping recurses too.
                    drop(parsed);
                    return Err(ShapeError::TooDeep {
                        depth,
                        limit: limits.max_depth,
                    });
                }
                Ok(parsed)
            }
            Err(_) => Ok(parsed),
        }
    };
    // stacker panics if it cannot map the stack (address space limits): refused, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stacker::grow(stack, parse)))
        .unwrap_or(Err(ShapeError::NoStack { bytes: stack }))
}

/// The depth of a tree (a leaf is 1), found with a stack of its own, not by recursion.
#[must_use]
pub fn depth(expr: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut todo: Vec<(&IdedExpr, usize)> = vec![(expr, 1)];
    while let Some((node, d)) = todo.pop() {
        deepest = deepest.max(d);
        let below = d + 1;
        match &node.expr {
            Expr::Call(call) => {
                todo.extend(call.target.as_deref().map(|t| (t, below)));
                todo.extend(call.args.iter().map(|a| (a, below)));
            }
            Expr::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    todo.push((part, below));
                }
            }
            Expr::List(list) => todo.extend(list.elements.iter().map(|e| (e, below))),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        todo.push((&e.key, below));
                        todo.push((&e.value, below));
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => todo.push((&f.value, below)),
                        EntryExpr::MapEntry(e) => {
                            todo.push((&e.key, below));
                            todo.push((&e.value, below));
                        }
                    }
                }
            }
            Expr::Select(s) => todo.push((&s.operand, below)),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ShapeLimits = ShapeLimits {
        max_bytes: 64 * 1024,
        max_depth: 32,
    };

    fn shape(source: &str) -> Result<usize, ShapeError> {
        let env = Arc::new(Env::stdlib());
        parse(source, &env, 128, LIMITS).map(|p| p.map_or(0, |e| depth(&e)))
    }

    fn deep(source: &str) -> bool {
        matches!(shape(source), Err(ShapeError::TooDeep { .. }))
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
            assert!(
                shape(source).is_ok_and(|d| d < 12),
                "{source}: {:?}",
                shape(source)
            );
        }
    }

    #[test]
    fn long_flat_conjunctions_pass_because_the_parser_balances_them() {
        let clause = "contact.attrs.segment == 'x'";
        let source = vec![clause; 1000].join(" && ");
        assert!(shape(&source).is_ok_and(|d| d < 20), "{:?}", shape(&source));
    }

    #[test]
    fn chains_and_nesting_past_the_limit_are_refused_with_their_depth() {
        assert!(deep(&vec!["1"; 40].join(" + ")));
        assert!(deep(&format!("a{}", ".b".repeat(40))));
        assert!(deep(&format!("{}x{}", "size(".repeat(40), ")".repeat(40))));
        assert!(deep(&format!("{} c", "a ? b : ".repeat(40))));
        assert!(deep(&format!("{}1", "1 in ".repeat(40))));
        assert!(!deep(&vec!["1"; 20].join(" + ")));
        assert_eq!(
            shape(&vec!["1"; 40].join("+")),
            Err(ShapeError::TooDeep {
                depth: 40,
                limit: 32
            })
        );
    }

    /// Inputs a model of the lexer read differently from the lexer (an escaped identifier
    /// holding `//`, error recovery dropping a quote, `0X`): measured on the parser's own
    /// tree, each is refused for its depth.
    #[test]
    fn what_the_parser_builds_is_what_is_measured() {
        let chain = vec!["1"; 2000].join("+");
        for source in [
            format!("a.`//` + {chain}"),
            format!("'\"\"\"\n{chain} //\"\"\""),
            format!("f(0XBr'\\q)+{chain}'"),
            format!("1in {chain}"),
        ] {
            match shape(&source) {
                Err(ShapeError::TooDeep { .. }) | Ok(_) => {}
                other => panic!("{source:?}: {other:?}"),
            }
            if let Ok(d) = shape(&source) {
                assert!(d <= LIMITS.max_depth, "{source:?}: {d}");
            }
        }
    }

    #[test]
    fn too_long_is_refused_before_parsing() {
        let limits = ShapeLimits {
            max_bytes: 10,
            max_depth: 32,
        };
        let env = Arc::new(Env::stdlib());
        assert_eq!(
            parse("contact.tier == 'A'", &env, 128, limits).map(|_| ()),
            Err(ShapeError::TooLong {
                bytes: 19,
                limit: 10
            })
        );
    }

    /// The longest expression allowed, all of it one chain, on a thread with a small stack:
    /// parsed and dropped on the parse's own stack.
    #[test]
    fn the_longest_chain_allowed_is_refused_on_a_small_stack() {
        let chain = format!("{}1", "1+".repeat(32 * 1024 - 1));
        assert!(chain.len() <= 64 * 1024);
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || shape(&chain))
            .expect("thread");
        let result = handle.join().expect("no overflow");
        assert!(
            matches!(result, Err(ShapeError::TooDeep { depth, .. }) if depth > 30_000),
            "{result:?}"
        );
    }
}
