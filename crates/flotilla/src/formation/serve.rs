//! Serving formation requests from other nodes.

use std::sync::Arc;

use flotilla_core::formation::{FormationRequest, FormationResponse, PeerPhase};
use flotilla_core::types::NodeId;
use flotilla_core::wire::WireError;
use flotilla_core::{DiscoverySource, Namespace, Sighting};

use crate::node::Node;

impl Node {
    /// Answer a formation request from the authenticated peer `from`. Hellos are answered
    /// for any namespace (this node is a rendezvous point even for namespaces it does not
    /// serve); promises only by nodes serving the namespace.
    pub(crate) fn serve_formation(
        self: &Arc<Self>,
        from: NodeId,
        ns: &Namespace,
        request: FormationRequest,
    ) -> Result<FormationResponse, WireError> {
        match request {
            FormationRequest::Hello(view) => {
                let view = view.bounded();
                let addrs: Vec<String> =
                    view.addrs.iter().take(flotilla_core::formation::MAX_PEER_ADDRS).cloned().collect();
                self.peers.saw(&Sighting { peer: from, addrs: addrs.clone(), source: DiscoverySource::Inbound });
                if !addrs.is_empty() {
                    self.transport.add_peer_addrs(from, &addrs);
                }
                if !matches!(view.phase, PeerPhase::NotServed) {
                    self.peers.register(ns, from, &addrs);
                }
                if let Some(formation) = self.formation(ns) {
                    // A fresh namespace acts on news at once rather than at its next paced tick.
                    if formation.record_view(from, view, false) && self.group(ns).is_some_and(|g| !g.has_state()) {
                        formation.nudge();
                    }
                }
                Ok(FormationResponse::View(self.local_view(ns, Some(from))))
            }
            FormationRequest::Promise(ballot) => {
                let formation = self.formation(ns).ok_or_else(|| WireError::UnknownNamespace(ns.to_string()))?;
                let counted = formation.lock().founder.on_promise(from, ballot);
                if counted {
                    formation.note(format!("promise from {from} counted"));
                    // The coordinator may now hold enough promises to found.
                    formation.nudge();
                }
                Ok(FormationResponse::Promised(counted))
            }
            FormationRequest::PromiseStatus(ballot) => {
                let formation = self.formation(ns).ok_or_else(|| WireError::UnknownNamespace(ns.to_string()))?;
                let state = formation.lock().founder.answer_status(from, ballot);
                Ok(FormationResponse::Status(state))
            }
            FormationRequest::Dissolve { cluster, force } => {
                Ok(FormationResponse::Dissolving(self.accept_dissolve(from, ns, &cluster, force)))
            }
        }
    }
}
