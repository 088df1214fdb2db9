//! The cost budget of one CEL evaluation. The interpreter has no meter of its own, so the
//! compiled tree is instrumented: every comprehension's range passes through a function that
//! charges one unit per element before the loop starts; every value a `map` or `filter` adds
//! to its result, and every operand of an operation whose work grows with its operands' size
//! (`in`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `+`, `contains`, `startsWith`, `endsWith`,
//! `string`; not `size`, which is constant for lists and maps) inside a
//! comprehension's steps, passes through one that
//! charges its size in cells. Both stop the evaluation with an error once the budget is
//! spent, so nested comprehensions, results that multiply and linear work repeated in a loop
//! stop after a bounded amount of work and memory.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use cel::{
    Context, ExecutionError, FunctionContext, IdedExpr,
    common::{
        ast::{CallExpr, EntryExpr, Expr, operators},
        types::{CelBytes, CelList, CelMap, CelString},
        value::{CowVal, Val},
    },
};

/// Charges the size of a comprehension's range. `@` cannot be written in CEL source, so no
/// expression can call these functions or shadow them.
const RANGE: &str = "@canvass_range";
/// Charges a value appended to a `map` or `filter` result.
const CELLS: &str = "@canvass_cells";

/// A function of the interpreter's own form (`cel` names it `Function` but does not export
/// the name): it gets the resolved arguments and may hand one back without copying it.
type Metering = Box<
    dyn for<'c, 'v> Fn(&mut FunctionContext<'c, 'v>) -> Result<CowVal<'c, 'v>, ExecutionError>
        + Send
        + Sync,
>;

/// How the reason of a spent budget starts.
pub(super) const EXCEEDED: &str = "cost limit exceeded";

/// Bytes of a string or bytes value that count as one cell.
const BYTES_PER_CELL: usize = 64;

/// Rewrites every comprehension in `expr` to charge the meter; says whether there was any
/// (an expression without comprehensions does bounded work and needs no meter). Walks the
/// tree with a stack of its own, not by recursion.
pub(super) fn instrument(expr: &mut IdedExpr) -> bool {
    let mut found = false;
    // Each node with whether it runs once per step of a comprehension (only there does
    // linear work repeat, so only there are operands charged).
    let mut todo: Vec<(&mut IdedExpr, bool)> = vec![(expr, false)];
    while let Some((node, in_loop)) = todo.pop() {
        let id = node.id;
        match &mut node.expr {
            Expr::Comprehension(c) => {
                found = true;
                wrap(&mut c.iter_range, RANGE, id);
                let accu = c.accu_var.clone();
                for appended in appended_lists(&mut c.loop_step, &accu) {
                    for element in appended {
                        wrap(element, CELLS, id);
                    }
                }
                todo.push((&mut c.iter_range, in_loop));
                todo.push((&mut c.accu_init, in_loop));
                todo.push((&mut c.loop_cond, true));
                todo.push((&mut c.loop_step, true));
                todo.push((&mut c.result, in_loop));
            }
            Expr::Call(call) => {
                if in_loop && grows_with_operands(call) {
                    if let Some(target) = call.target.as_deref_mut() {
                        charge_operand(target);
                    }
                    call.args.iter_mut().for_each(charge_operand);
                }
                if let Some(target) = call.target.as_deref_mut() {
                    todo.push((target, in_loop));
                }
                todo.extend(call.args.iter_mut().map(|a| (a, in_loop)));
            }
            Expr::List(list) => todo.extend(list.elements.iter_mut().map(|e| (e, in_loop))),
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    if let EntryExpr::MapEntry(e) = &mut entry.expr {
                        todo.push((&mut e.key, in_loop));
                        todo.push((&mut e.value, in_loop));
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &mut s.entries {
                    match &mut entry.expr {
                        EntryExpr::StructField(f) => todo.push((&mut f.value, in_loop)),
                        EntryExpr::MapEntry(e) => {
                            todo.push((&mut e.key, in_loop));
                            todo.push((&mut e.value, in_loop));
                        }
                    }
                }
            }
            Expr::Select(s) => todo.push((&mut s.operand, in_loop)),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    found
}

/// Operations whose work grows with the size of their operands (a list scanned, values
/// compared or copied). The accumulator's own append (`@result + [e]`) is left as it is: the
/// interpreter appends in place when it sees that shape, and its elements are charged apart.
fn grows_with_operands(call: &CallExpr) -> bool {
    let hidden = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n.starts_with('@'));
    matches!(
        call.func_name.as_str(),
        operators::IN
            | operators::EQUALS
            | operators::NOT_EQUALS
            | operators::ADD
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | "contains"
            | "startsWith"
            | "endsWith"
            | "string"
    ) && !call.args.iter().chain(call.target.as_deref()).any(hidden)
}

/// Charges an operand's size when it is evaluated; a literal's is fixed by the expression's
/// size, so it is left alone.
fn charge_operand(operand: &mut IdedExpr) {
    if !matches!(operand.expr, Expr::Literal(_)) {
        let id = operand.id;
        wrap(operand, CELLS, id);
    }
}

/// Replaces `expr` by a call of `function` on it (the wrapper's argument is the original).
fn wrap(expr: &mut IdedExpr, function: &str, id: u64) {
    let inner = std::mem::take(expr);
    *expr = IdedExpr {
        id,
        expr: Expr::Call(CallExpr {
            func_name: function.to_string(),
            target: None,
            args: vec![inner],
        }),
    };
}

/// The elements of the list literals a loop step appends to the accumulator
/// (`accu + [e]`, also under a `cond ? accu + [e] : accu` guard): the shape the standard
/// `map` and `filter` expand to. The shape is kept, only the elements are wrapped, so the
/// interpreter still appends in place.
fn appended_lists<'e>(step: &'e mut IdedExpr, accu: &str) -> Vec<&'e mut Vec<IdedExpr>> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == accu);
    let mut found = Vec::new();
    let Expr::Call(call) = &mut step.expr else {
        return found;
    };
    let mut candidates: Vec<&mut CallExpr> = Vec::new();
    if call.func_name == operators::CONDITIONAL {
        for arg in &mut call.args {
            if let Expr::Call(inner) = &mut arg.expr {
                candidates.push(inner);
            }
        }
    } else {
        candidates.push(call);
    }
    for c in candidates {
        if c.func_name != operators::ADD || c.target.is_some() {
            continue;
        }
        if let [lhs, rhs] = c.args.as_mut_slice()
            && is_accu(lhs)
            && let Expr::List(list) = &mut rhs.expr
        {
            found.push(&mut list.elements);
        }
    }
    found
}

/// Adds the metering functions to one evaluation's context and gives back the meter.
pub(super) fn install(ctx: &mut Context<'_, '_>, limit: u64) -> Meter {
    let meter = Meter(Arc::new(Spent {
        units: AtomicU64::new(0),
        limit,
    }));
    let for_range = meter.clone();
    let range: Metering = Box::new(move |ftx| {
        let value = single_argument(ftx)?;
        let units = value
            .as_sizer()
            .map_or(1, |s| u64::try_from(*s.size().inner()).unwrap_or(u64::MAX));
        for_range.charge(units, ftx)?;
        Ok(value)
    });
    let for_cells = meter.clone();
    let cells: Metering = Box::new(move |ftx| {
        let value = single_argument(ftx)?;
        let left = for_cells.left();
        let units = cells_of(value.as_ref(), left.saturating_add(1));
        for_cells.charge(units, ftx)?;
        Ok(value)
    });
    // The names cannot collide with the standard library's: they start with `@`.
    let _ = ctx.add_function(RANGE, range);
    let _ = ctx.add_function(CELLS, cells);
    meter
}

fn single_argument<'c, 'v>(
    ftx: &mut FunctionContext<'c, 'v>,
) -> Result<CowVal<'c, 'v>, ExecutionError> {
    match ftx.args.pop() {
        Some(v) if ftx.args.is_empty() => Ok(v),
        _ => Err(ftx.error("internal: the meter takes one argument")),
    }
}

/// The size of `value` in cells: one per value, list element and map key and value, and one
/// per [`BYTES_PER_CELL`] bytes of text. Counts no further than `stop` (the budget left), so
/// measuring a huge value is itself cheap.
fn cells_of(value: &dyn Val, stop: u64) -> u64 {
    let mut units: u64 = 0;
    let mut todo: Vec<&dyn Val> = vec![value];
    while let Some(v) = todo.pop() {
        units = units.saturating_add(1);
        if units >= stop {
            return units;
        }
        if let Some(list) = v.downcast_ref::<CelList>() {
            todo.extend(list.inner().iter().map(AsRef::as_ref));
        } else if let Some(map) = v.downcast_ref::<CelMap>() {
            units = units.saturating_add(map.inner().len() as u64);
            todo.extend(map.inner().values().map(AsRef::as_ref));
        } else if let Some(s) = v.downcast_ref::<CelString>() {
            units = units.saturating_add((s.inner().len() / BYTES_PER_CELL) as u64);
        } else if let Some(b) = v.downcast_ref::<CelBytes>() {
            units = units.saturating_add((b.inner().len() / BYTES_PER_CELL) as u64);
        }
    }
    units
}

/// What one evaluation has spent of its budget.
#[derive(Debug, Clone)]
pub(super) struct Meter(Arc<Spent>);

#[derive(Debug)]
struct Spent {
    units: AtomicU64,
    limit: u64,
}

impl Meter {
    fn left(&self) -> u64 {
        self.0
            .limit
            .saturating_sub(self.0.units.load(Ordering::Relaxed))
    }

    fn charge(&self, units: u64, ftx: &FunctionContext) -> Result<(), ExecutionError> {
        let before = self.0.units.fetch_add(units, Ordering::Relaxed);
        if before.saturating_add(units) > self.0.limit {
            return Err(ftx.error(self.exceeded()));
        }
        Ok(())
    }

    /// The reason given when the budget runs out.
    pub(super) fn exceeded(&self) -> String {
        format!(
            "{EXCEEDED}: the evaluation would cost more than {} units \
             (comprehension elements and values built; policy `celLimits.maxCost`)",
            self.0.limit
        )
    }

    /// Whether the budget ran out (the interpreter's error wraps our reason).
    pub(super) fn ran_out(&self) -> bool {
        self.0.units.load(Ordering::Relaxed) > self.0.limit
    }
}
