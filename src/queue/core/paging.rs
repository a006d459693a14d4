//! The queue's side of its log: messages paged out of memory once the log has them and read back
//! when they near the head, and the batch's writes (settlements, deliveries, deduplication).

use std::collections::HashMap;

use super::{Context, QueueCore, PAGE_IN_RETRY_MS, PAGE_IN_WINDOW};
use crate::message::MessageRef;
use crate::queue::log::LogRecord;
use crate::queue::ready::{Entry, Slot};

impl QueueCore {
    /// Pages out the entries whose messages the log has made durable, while the queue is over
    /// its memory limit. An entry whose write may have failed stays in memory.
    pub(super) fn page_out_committed(&mut self, ctx: &mut impl Context) {
        if self.page_out.is_empty() {
            return;
        }
        let log = ctx.log();
        let durable = log.durable();
        while let Some(p) = self.page_out.front() {
            if p.written_at > durable {
                break;
            }
            let Some(p) = self.page_out.pop_front() else {
                break;
            };
            let logged_as = p.copy.or_else(|| self.ready.stored_id(p.level, p.entry));
            let written = logged_as.is_some_and(|id| !log.write_failed(id));
            if !(written && self.ready.page_out(p.level, p.entry, p.copy)) {
                // Kept in memory (or delivered, or gone): a transient message's copy is not needed.
                self.removed_copies.extend(p.copy);
            }
        }
    }

    /// Makes the head of the queue deliverable: expired heads leave (dead-lettered), a paged-out
    /// head is read back with the entries behind it. False when nothing is ready, or when the
    /// log cannot be read right now (retried shortly).
    pub(super) fn prepare_head(&mut self, ctx: &mut impl Context) -> bool {
        loop {
            let Some(head) = self.ready.head() else {
                return false;
            };
            let (expires_at, paged) = (head.expires_at, head.is_paged());
            if self.head_expired(expires_at, ctx) {
                if let Some(entry) = self.ready.pop_front() {
                    self.dead_letter(entry, super::Reason::Expired, ctx);
                }
                continue;
            }
            if !paged {
                self.retry_at = None;
                return true;
            }
            let Some((level, ids)) = self.ready.paged_head(PAGE_IN_WINDOW) else {
                return true;
            };
            let Some(read) = self.read_paged(&ids, ctx) else {
                self.retry_at = Some(ctx.now_ms() + PAGE_IN_RETRY_MS);
                return false;
            };
            // Transient messages back in memory need their copies no more.
            for (id, _) in ids.iter().filter(|(id, t)| *t && read.contains_key(id)) {
                self.removed_copies.push(*id);
            }
            for lost in self.ready.page_in(level, PAGE_IN_WINDOW, read) {
                // Only a message whose write failed (and was nacked) can be missing.
                tracing::warn!(queue = %self.name, "paged-out message missing from the log; dropped");
                self.forget_logged_copy(&lost);
            }
        }
    }

    /// Reads paged-out messages back from the log: (log id, transient copy) pairs.
    fn read_paged(
        &self,
        ids: &[(u64, bool)],
        ctx: &mut impl Context,
    ) -> Option<HashMap<u64, MessageRef>> {
        if !self.logged {
            return None;
        }
        match ctx.log().read(ids) {
            Ok(read) => Some(read),
            Err(e) => {
                tracing::warn!(queue = %self.name, "cannot read paged-out messages, will retry: {e}");
                None
            }
        }
    }

    /// An entry's message, read back from the log if it is paged out.
    pub(super) fn load(&self, entry: &Entry, ctx: &mut impl Context) -> Option<MessageRef> {
        match &entry.slot {
            Slot::Loaded(m) => Some(m.clone()),
            Slot::Paged {
                storage_id,
                transient,
                ..
            } => self
                .read_paged(&[(*storage_id, *transient)], ctx)?
                .remove(storage_id),
        }
    }

    /// Writes what this batch settled and delivered (no waiting: settlements need no fsync of
    /// their own).
    pub(super) fn write_log(&mut self, ctx: &mut impl Context) {
        if !self.logged {
            return;
        }
        let log = ctx.log();
        // First, so that a message's removal never comes before its enqueue.
        if !self.enqueued.is_empty() {
            log.append(LogRecord::Enqueued(std::mem::take(&mut self.enqueued)));
        }
        if self.delivered_through > self.delivered_recorded {
            self.delivered_recorded = self.delivered_through;
            log.append(LogRecord::Delivered {
                through: self.delivered_through,
            });
        }
        if !self.held_logged.is_empty() {
            log.append(LogRecord::Held(std::mem::take(&mut self.held_logged)));
        }
        if !self.released_logged.is_empty() {
            log.append(LogRecord::Released(std::mem::take(
                &mut self.released_logged,
            )));
        }
        if !self.removed.is_empty() {
            log.append(LogRecord::Removed(std::mem::take(&mut self.removed)));
        }
        if !self.removed_copies.is_empty() {
            log.append(LogRecord::CopiesRemoved(std::mem::take(
                &mut self.removed_copies,
            )));
        }
        if let Some(cache) = self.dedup.as_mut() {
            let (remembered, forgotten) = cache.take_changes();
            if !remembered.is_empty() {
                log.append(LogRecord::RememberIds(remembered));
            }
            if !forgotten.is_empty() {
                log.append(LogRecord::ForgetIds(forgotten));
            }
        }
        // The batch's page-outs wait for everything appended so far.
        let written_at = log.appended();
        for p in self.page_out.iter_mut().rev().take(self.unstamped) {
            p.written_at = written_at;
        }
        self.unstamped = 0;
    }
}
