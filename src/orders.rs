//! Order clusters: one Envoy aggregate cluster per provider order the router can choose. The
//! router names the request's in a header, the route's `cluster_header` sends it there, and the
//! route's `previous_priorities` retry priority moves each retry (or hedge) to the next provider.
//! This works on every Envoy from 1.36 (docs/compatibility.md); `render` writes the clusters.

use std::collections::BTreeSet;

use crate::config::RouterConfig;

/// Separates provider names in an order cluster's name: provider names never contain it.
const SEPARATOR: char = '~';
const PREFIX: &str = "llm_failover";

/// Chains up to this long get a cluster for every ordering of every subset (64 at 4). A longer
/// chain gets one per subset and leading provider: the first choice is always honoured, and the
/// fallbacks follow the chain's order.
pub const FULL_ORDERINGS_UP_TO: usize = 4;

/// `llm_failover~openai~ollama`
pub fn cluster_name(order: &[&str]) -> String {
    let mut name = String::from(PREFIX);
    for provider in order {
        name.push(SEPARATOR);
        name.push_str(provider);
    }
    name
}

/// The order whose cluster serves `wanted`, a plan's order over `chain`'s providers.
pub fn served<'a>(wanted: &[&'a str], chain: &[String]) -> Vec<&'a str> {
    if chain.len() <= FULL_ORDERINGS_UP_TO || wanted.len() <= 2 {
        return wanted.to_vec();
    }
    let position = |p: &&str| chain.iter().position(|c| c == p).unwrap_or(usize::MAX);
    let mut rest = wanted.get(1..).unwrap_or_default().to_vec();
    crate::sort::stable_sort_by_key(&mut rest, position);
    wanted.iter().take(1).copied().chain(rest).collect()
}

/// Every order of `chain` the router may choose, as `served` maps them.
pub fn of_chain(chain: &[String]) -> Vec<Vec<&str>> {
    let mut orders = Vec::new();
    let subsets = 1u64.checked_shl(chain.len() as u32).unwrap_or(0);
    for mask in 1..subsets {
        let subset: Vec<&str> = chain.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, p)| p.as_str()).collect();
        if chain.len() <= FULL_ORDERINGS_UP_TO {
            permutations(&subset, &mut orders);
        } else {
            for (lead, first) in subset.iter().enumerate() {
                let mut order = vec![*first];
                order.extend(subset.iter().enumerate().filter(|(i, _)| *i != lead).map(|(_, p)| *p));
                orders.push(order);
            }
        }
    }
    orders
}

fn permutations<'a>(items: &[&'a str], out: &mut Vec<Vec<&'a str>>) {
    fn walk<'a>(prefix: &mut Vec<&'a str>, left: &mut Vec<&'a str>, out: &mut Vec<Vec<&'a str>>) {
        if left.is_empty() {
            out.push(prefix.clone());
            return;
        }
        for i in 0..left.len() {
            let item = left.remove(i);
            prefix.push(item);
            walk(prefix, left, out);
            prefix.pop();
            left.insert(i, item);
        }
    }
    walk(&mut Vec::with_capacity(items.len()), &mut items.to_vec(), out);
}

/// Every order cluster a deployment needs, each once, sorted.
pub fn all(config: &RouterConfig) -> Vec<Vec<String>> {
    let mut orders = BTreeSet::new();
    for chain in &config.chains {
        for order in of_chain(&chain.providers) {
            orders.insert(order.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        }
    }
    orders.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn names_join_providers_with_a_separator_names_never_hold() {
        assert_eq!(cluster_name(&["openai", "ollama"]), "llm_failover~openai~ollama");
        assert!(crate::config::check_name("a~b").is_err());
    }

    #[test]
    fn short_chains_get_every_ordering_of_every_subset() {
        let abc = chain(&["a", "b", "c"]);
        let orders = of_chain(&abc);
        assert_eq!(orders.len(), 3 + 6 + 6);
        assert!(orders.contains(&vec!["c", "a", "b"]) && orders.contains(&vec!["b"]) && orders.contains(&vec!["c", "a"]));
        assert_eq!(of_chain(&chain(&["a", "b", "c", "d"])).len(), 64);
        assert_eq!(served(&["c", "a", "b"], &abc), ["c", "a", "b"]);
    }

    #[test]
    fn long_chains_keep_the_lead_and_the_chain_order_after_it() {
        let five = chain(&["a", "b", "c", "d", "e"]);
        let orders = of_chain(&five);
        assert_eq!(orders.len(), 5 * 16, "n * 2^(n-1)");
        let served = served(&["d", "e", "b", "a"], &five);
        assert_eq!(served, ["d", "a", "b", "e"]);
        assert!(orders.contains(&served));
        // Every order a plan can produce over the chain has its cluster.
        for order in &orders {
            assert!(orders.contains(&super::served(order, &five)));
        }
    }

    #[test]
    fn a_deployment_needs_each_order_once() {
        let json = r#"{"role":"router","providers":[{"name":"a","format":"openai","host":"a"},{"name":"b","format":"openai","host":"b"}],
            "chains":{"one":["a","b"],"two":["b","a"],"solo":["a"]}}"#;
        let crate::config::Config::Router(d) = crate::config::parse(json.as_bytes(), &NoEnv).unwrap() else { unreachable!() };
        let all = all(&d.router);
        assert_eq!(all, [vec!["a"], vec!["a", "b"], vec!["b"], vec!["b", "a"]]);
    }

    struct NoEnv;
    impl crate::config::Environment for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }
}
