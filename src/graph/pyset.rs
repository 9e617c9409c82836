//! CPython's iteration order of a `set` of ints built by successive `add`s.
//!
//! The original keeps a publisher's authors in a Python set and stable-sorts them by book count
//! before cutting at 20, so which of the equally prolific authors survive the cut is decided by
//! the set's iteration order. Reproducing that order (CPython's open-addressing table: linear
//! probes of 9, perturbed jumps, growth at 3/5 fill) makes our `shared_publisher` edges the same
//! as the Python API's for the same rows.

const LINEAR_PROBES: usize = 9;
const PERTURB_SHIFT: u32 = 5;
const MIN_SIZE: usize = 8;

/// CPython's `hash(int)` for values that fit in an i32, as the unsigned slot hash.
fn py_hash(v: i32) -> u64 {
    let h: i64 = if v == -1 { -2 } else { v.into() };
    h as u64
}

/// Iteration order of `s = set(); for v in values: s.add(v)` in CPython 3.
pub(crate) fn iteration_order(values: impl IntoIterator<Item = i32>) -> Vec<i32> {
    let mut table: Vec<Option<i32>> = vec![None; MIN_SIZE];
    let mut fill = 0usize;
    for v in values {
        if insert(&mut table, v) {
            fill += 1;
            let mask = table.len() - 1;
            if fill * 5 >= mask * 3 {
                table = resized(&table, if fill > 50_000 { fill * 2 } else { fill * 4 });
            }
        }
    }
    table.into_iter().flatten().collect()
}

/// The slots CPython visits for `hash` in a table of `mask + 1` slots: a run of the slot and its
/// [`LINEAR_PROBES`] neighbours (only the slot itself near the end of the table), then a
/// perturbed jump, without end (a table always has a free slot).
fn probes(hash: u64, mask: usize) -> impl Iterator<Item = usize> {
    let mut perturb = hash;
    let mut i = (hash as usize) & mask;
    std::iter::from_fn(move || {
        let run = if i + LINEAR_PROBES <= mask {
            i..i + LINEAR_PROBES + 1
        } else {
            i..i + 1
        };
        perturb >>= PERTURB_SHIFT;
        i = (i
            .wrapping_mul(5)
            .wrapping_add(1)
            .wrapping_add(perturb as usize))
            & mask;
        Some(run)
    })
    .flatten()
}

/// `set_add_entry`: false when the value was already present.
fn insert(table: &mut [Option<i32>], v: i32) -> bool {
    let mask = table.len() - 1;
    probes(py_hash(v), mask)
        .find_map(|i| match table[i] {
            None => {
                table[i] = Some(v);
                Some(true)
            }
            Some(existing) => (existing == v).then_some(false),
        })
        .expect("the probe sequence reaches a free slot")
}

/// `set_table_resize` followed by `set_insert_clean` of every live entry, in slot order.
fn resized(old: &[Option<i32>], min_used: usize) -> Vec<Option<i32>> {
    let mut size = MIN_SIZE;
    while size <= min_used {
        size <<= 1;
    }
    let mut table = vec![None; size];
    let mask = size - 1;
    for &v in old.iter().flatten() {
        let free = probes(py_hash(v), mask)
            .find(|&i| table[i].is_none())
            .expect("the probe sequence reaches a free slot");
        table[free] = Some(v);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::iteration_order;

    /// Pairs of (values added in order, `list(s)`) printed by CPython 3.11.
    const VECTORS: &str = include_str!("pyset_vectors.txt");

    fn parse(line: &str) -> Vec<i32> {
        line.trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    }

    #[test]
    fn matches_cpython_iteration_order() {
        let lines: Vec<&str> = VECTORS.lines().collect();
        assert_eq!(lines.len() % 2, 0);
        assert!(!lines.is_empty());
        for pair in lines.chunks(2) {
            assert_eq!(iteration_order(parse(pair[0])), parse(pair[1]));
        }
    }

    #[test]
    fn small_values_iterate_ascending_and_duplicates_collapse() {
        assert_eq!(iteration_order([5, 3, 3, 1, 7]), vec![1, 3, 5, 7]);
        assert_eq!(iteration_order([]), Vec::<i32>::new());
    }

    #[test]
    fn collisions_follow_insertion_order() {
        // 9 takes slot 1 of the 8-slot table; 1 and 17 hash there too and jump to slots 6 and 7.
        assert_eq!(iteration_order([9, 1, 17]), vec![9, 1, 17]);
    }
}
