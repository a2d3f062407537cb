//! Leaving a lock's or an election's queue when the client gives up waiting.

use crate::concurrency::Recipes;
use crate::pb::etcdserverpb::TxnRequest;

/// A transaction that removes a waiting contender's key, run when this is dropped armed: a
/// client that cancels a Lock or Campaign drops the request's future, and etcd's server then
/// deletes the key (the mutex's `Unlock`, the election's `Resign`) so it does not block the
/// contenders behind it.
pub(crate) struct Withdraw {
    pending: Option<(Recipes, TxnRequest)>,
}

impl Withdraw {
    /// Armed with `txn`, to run on `recipes`.
    pub(crate) fn armed(recipes: Recipes, txn: TxnRequest) -> Self {
        Self { pending: Some((recipes, txn)) }
    }

    /// The contender keeps its key: nothing runs on drop.
    pub(crate) fn disarm(mut self) {
        self.pending = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some((recipes, txn)) = self.pending.take() else {
            return;
        };
        // Dropped outside a runtime (at shutdown): the key goes with its lease.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = recipes.txn(txn).await {
                tracing::debug!(error = %e, "withdrawing a waiting contender failed; its lease will remove its key");
            }
        });
    }
}
