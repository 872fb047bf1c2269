//! A stable insertion sort for the short lists the filter orders (providers, paths, model names).
//! `slice::sort_by` costs the module 1 to 3 KB per call site; this costs a few hundred bytes.

/// Sorts `items` so that no item is `less` than one before it, keeping equal items in their order.
/// Quadratic: for lists of tens (per request) to hundreds (at configuration) of items.
pub fn stable_sort_by<T>(items: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    for end in 1..items.len() {
        let mut at = end;
        while at > 0 {
            match (items.get(at - 1), items.get(at)) {
                (Some(before), Some(item)) if less(item, before) => items.swap(at - 1, at),
                _ => break,
            }
            at -= 1;
        }
    }
}

/// [`stable_sort_by`] on a key.
pub fn stable_sort_by_key<T, K: Ord>(items: &mut [T], mut key: impl FnMut(&T) -> K) {
    stable_sort_by(items, |a, b| key(a) < key(b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_the_standard_stable_sort() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40 {
            let items: Vec<(u8, usize)> = (0..len)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state % 5) as u8, i)
                })
                .collect();
            let mut ours = items.clone();
            stable_sort_by_key(&mut ours, |(k, _)| *k);
            let mut std = items;
            std.sort_by_key(|(k, _)| *k);
            assert_eq!(ours, std, "length {len}");
        }
        let mut words = vec!["b", "a", "c", "a"];
        stable_sort_by(&mut words, |a, b| a < b);
        assert_eq!(words, ["a", "a", "b", "c"]);
    }
}
