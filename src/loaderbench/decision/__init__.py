"""The one decision engine: how a comparison becomes a verdict, for the stored gate and the A/B alike.

Both modes reduce each case and metric to one :class:`~loaderbench.decision.rules.Evidence`: the
oriented log change ``x`` (above 0 when worse: throughput lower; TTFB, stall, memory or CPU time
higher), its standard error ``se`` with ``dof`` degrees of freedom, the threshold and the metric's
absolute floor.  The stored gate builds it from the baseline's sessions and today's processes
(:mod:`loaderbench.gate.model`); the A/B from paired fresh processes (:mod:`loaderbench.ab.paired`).
Then the same rules decide, written once here and in :mod:`~loaderbench.decision.rules`:

1. **The job is the unit** (:mod:`~loaderbench.decision.job`).  Every case x metric a job judges is
   one hypothesis of one family; the family's false-red rate (the chance that an unchanged job turns
   red) is held at ``job_alpha`` (1%) with **Holm's step-down procedure** on the one-sided
   p-values of the regressions.  Holm controls the family-wise error rate under any dependence
   between the tests (cases of one run share the machine, so they are correlated), and the
   family-wise rate *is* the rate of red A/A jobs, which is what a PR author sees.
   Benjamini-Hochberg would control the share of false regressions among the reported ones
   instead, which lets an A/A job go red more often; it was rejected for that reason.
2. **The machine's shift is one verdict, not many.**  When a job judges enough cases of a metric,
   their median change is the run's common offset.  Each case is decided on its deviation from that
   offset, and the offset itself is one more hypothesis, tested against the between-period noise.
   The **control case** (a spin loop and a memory copy, no DataLoader: :mod:`loaderbench.engine.control`)
   tells the two causes apart: when the control moved as much as the cases, the machine moved and the
   offset line says so without failing; when the control held and every case slowed, every loader
   regressed, and that one verdict fails the job.
3. **The noise model is checked by the run itself.**  When today's cases scatter around the offset
   more than their noise model allows (a busier or drifting machine), every standard error is scaled
   up by that factor (the empirical null of large-scale testing, never scaled down), so a disturbed
   machine gives ``inconclusive`` verdicts, not red jobs.
4. **A regression** needs: Holm's rejection of "no worse", an estimate within the power margin of
   the threshold or beyond it (``x >= T - z_p * se``: a threshold-sized regression is what the data
   show), a change above the metric's absolute floor, and (stored gate) the confirmation of a fresh
   process.  **Improved** is the mirror image (Bonferroni over the family) and never fails a run.
   **Unchanged**: ``|x| < T - z_p * se``, a threshold-sized change ruled out.  Anything else is
   **inconclusive**, with the change the case could resolve and what would narrow it.
5. **The A/B decides sequentially** (:mod:`~loaderbench.decision.sequential`): a case is looked at
   after every pair from 3 on; each hypothesis spends its share of the job's level (Bonferroni over the
   job's hypotheses) over its looks, 10% evenly over the early looks and the rest at the last one, so a
   large change stops early and a small one keeps its power to the end; ``unchanged`` may stop early,
   from 3 pairs on, with its own error (calling a threshold-sized change unchanged, 10%) spent over the
   looks the same way, so the looks together do not miss more often than one final look would;
   and the pairs' variance is pooled with the stored between-process prior behind an F-check, so a 2x
   change is decided in 3 pairs.
"""
