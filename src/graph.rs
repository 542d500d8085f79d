//! The dependency graph of a recipe set: missing dependencies, cycles, closures and build order.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use petgraph::Direction;

use crate::recipe::{suggestion, Location, Recipe, RecipeError, RecipeSet};

/// Edges point from a dependency to its dependent, so a topological order is a build order.
pub struct Graph<'a> {
    pub set: &'a RecipeSet,
    graph: DiGraph<&'a str, ()>,
    index: BTreeMap<&'a str, NodeIndex>,
}

impl<'a> Graph<'a> {
    /// Checks every dependency exists and the graph has no cycle.
    pub fn new(set: &'a RecipeSet) -> Result<Self, RecipeError> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        for name in set.recipes.keys() {
            index.insert(name.as_str(), graph.add_node(name.as_str()));
        }
        for (name, recipe) in &set.recipes {
            for dep in recipe.needs() {
                let Some(&from) = index.get(dep.name.as_str()) else {
                    return Err(RecipeError::MissingDep {
                        at: dep.at.clone(),
                        recipe: name.clone(),
                        dep: dep.name.clone(),
                        hint: suggestion(&dep.name, set.recipes.keys().map(String::as_str)).into(),
                    });
                };
                graph.add_edge(from, index[name.as_str()], ());
            }
        }
        let g = Graph { set, graph, index };
        g.check_cycles()?;
        Ok(g)
    }

    fn check_cycles(&self) -> Result<(), RecipeError> {
        if toposort(&self.graph, None).is_ok() {
            return Ok(());
        }
        // Report the cycle through the alphabetically first recipe of the first strongly
        // connected component, so the message is the same on every run.
        let mut sccs: Vec<Vec<NodeIndex>> = tarjan_scc(&self.graph)
            .into_iter()
            .filter(|c| c.len() > 1 || self.graph.contains_edge(c[0], c[0]))
            .collect();
        for c in &mut sccs {
            c.sort_by_key(|n| self.graph[*n]);
        }
        sccs.sort_by_key(|c| self.graph[c[0]]);
        let scc = &sccs[0];
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = scc[0];
        // Walk "depends on" edges (reverse of stored edges) within the component back to start.
        let path = self.path_within(start, &members);
        let names: Vec<&str> = path.iter().map(|n| self.graph[*n]).collect();
        let first = self.recipe(names[0]);
        let at = first
            .needs()
            .find(|d| d.name == names[1])
            .map(|d| d.at.clone())
            .unwrap_or_else(|| Location::at_line(&first.file, None));
        Err(RecipeError::Cycle {
            at,
            cycle: names.join(" -> "),
        })
    }

    /// A shortest "depends on" path from `start` back to itself inside `members` (BFS).
    fn path_within(&self, start: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<NodeIndex> {
        let mut prev: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            let mut deps: Vec<NodeIndex> = self
                .graph
                .neighbors_directed(n, Direction::Incoming)
                .filter(|d| members.contains(d))
                .collect();
            deps.sort_by_key(|d| self.graph[*d]);
            for d in deps {
                if d == start {
                    let mut path = vec![n];
                    let mut cur = n;
                    while cur != start {
                        cur = prev[&cur];
                        path.push(cur);
                    }
                    path.reverse();
                    path.push(start);
                    return path;
                }
                if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(d) {
                    e.insert(n);
                    queue.push_back(d);
                }
            }
        }
        vec![start, start]
    }

    pub fn recipe(&self, name: &str) -> &'a Recipe {
        &self.set.recipes[name]
    }

    /// `targets` and everything they depend on, in a build order (dependencies first; ties
    /// broken by name so the order is stable).
    pub fn closure(&self, targets: &[String]) -> Result<Vec<&'a Recipe>, RecipeError> {
        let mut wanted = BTreeSet::new();
        let rev = Reversed(&self.graph);
        for t in targets {
            self.set.get(t)?;
            let mut dfs = Dfs::new(rev, self.index[t.as_str()]);
            while let Some(n) = dfs.next(rev) {
                wanted.insert(n);
            }
        }
        Ok(self
            .order()
            .into_iter()
            .filter(|n| wanted.contains(n))
            .map(|n| self.recipe(self.graph[n]))
            .collect())
    }

    /// Every recipe in build order.
    pub fn all(&self) -> Vec<&'a Recipe> {
        self.order()
            .into_iter()
            .map(|n| self.recipe(self.graph[n]))
            .collect()
    }

    /// Kahn's algorithm with a sorted ready set: deterministic, unlike a DFS-based toposort.
    fn order(&self) -> Vec<NodeIndex> {
        let mut indegree: BTreeMap<NodeIndex, usize> = self
            .graph
            .node_indices()
            .map(|n| {
                (
                    n,
                    self.graph
                        .neighbors_directed(n, Direction::Incoming)
                        .count(),
                )
            })
            .collect();
        let mut ready: BTreeSet<(&str, NodeIndex)> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| (self.graph[*n], *n))
            .collect();
        let mut out = Vec::with_capacity(indegree.len());
        while let Some(first) = ready.pop_first() {
            let n = first.1;
            out.push(n);
            for m in self.graph.neighbors_directed(n, Direction::Outgoing) {
                let d = indegree.get_mut(&m).expect("every node has an indegree");
                *d -= 1;
                if *d == 0 {
                    ready.insert((self.graph[m], m));
                }
            }
        }
        out
    }

    /// Graphviz DOT of the closure of `targets` (all recipes when empty).
    pub fn dot(&self, targets: &[String]) -> Result<String, RecipeError> {
        let nodes = if targets.is_empty() {
            self.all()
        } else {
            self.closure(targets)?
        };
        let mut s = String::from("digraph pybake {\n  rankdir=BT;\n  node [shape=box];\n");
        for r in &nodes {
            s.push_str(&format!(
                "  \"{}\" [label=\"{}\\n{}\"];\n",
                r.name, r.name, r.version
            ));
        }
        for r in &nodes {
            for d in &r.deps {
                s.push_str(&format!("  \"{}\" -> \"{}\";\n", r.name, d.name));
            }
            if let Some(root) = &r.root {
                s.push_str(&format!(
                    "  \"{}\" -> \"{}\" [style=dashed, label=\"root\"];\n",
                    r.name, root.name
                ));
            }
        }
        s.push_str("}\n");
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    fn set(files: &[(&str, &str)]) -> (tempfile::TempDir, RecipeSet) {
        let t = tempfile::tempdir().unwrap();
        for (name, deps) in files {
            let deps: Vec<String> = deps
                .split_whitespace()
                .map(|d| format!("\"{d}\""))
                .collect();
            std::fs::write(
                t.path().join(format!("{name}.toml")),
                format!(
                    "name = \"{name}\"\nversion = \"1\"\ndeps = [{}]\n",
                    deps.join(", ")
                ),
            )
            .unwrap();
        }
        let s = RecipeSet::load(t.path()).unwrap();
        (t, s)
    }

    #[test]
    fn cycle_is_printed_as_a_path() {
        let (_t, s) = set(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "")]);
        let e = Graph::new(&s).err().unwrap().to_string();
        assert!(e.contains("dependency cycle: a -> b -> c -> a"), "{e}");
        assert!(e.contains("a.toml:3"), "{e}");
    }

    #[test]
    fn self_cycle() {
        let (_t, s) = set(&[("a", "a")]);
        let e = Graph::new(&s).err().unwrap().to_string();
        assert!(e.contains("a -> a"), "{e}");
    }

    #[test]
    fn missing_dep_suggests() {
        let (_t, s) = set(&[("hello", "greting"), ("greeting", "")]);
        let e = Graph::new(&s).err().unwrap().to_string();
        assert!(
            e.contains("hello.toml:3") && e.contains("did you mean `greeting`"),
            "{e}"
        );
    }

    #[test]
    fn closure_is_in_build_order() {
        let (_t, s) = set(&[
            ("app", "lib tool"),
            ("lib", "base"),
            ("tool", "base"),
            ("base", ""),
            ("x", ""),
        ]);
        let g = Graph::new(&s).unwrap();
        let names: Vec<&str> = g
            .closure(&["app".into()])
            .unwrap()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["base", "lib", "tool", "app"]);
    }
}
