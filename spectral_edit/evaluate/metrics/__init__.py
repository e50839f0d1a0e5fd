"""Pure benchmark metrics (no model): one module per kind of benchmark.

- :mod:`.multiple_choice` -- TruthfulQA MC1/MC2/MC3 and the fold-tuning criterion;
  ``acc`` / ``acc_norm`` of log-likelihood multiple-choice tasks;
- :mod:`.bbq` -- BBQ accuracy, unknown rate, bias score and stereotype rate;
- :mod:`.crows_pairs` -- the CrowS-Pairs preference for the more stereotyping sentence;
- :mod:`.gsm8k` -- GSM8K answer extraction and exact match;
- :mod:`.common` -- the arg-max and input checks they share.

Every function takes scores or predictions that a scorer has already computed and
returns plain Python numbers, so results can be written straight to JSON.

Conventions:

* Aggregate rates are in **percent** (0–100); per-question TruthfulQA scores
  (:func:`~.multiple_choice.mc_scores`) are fractions in [0, 1], as
  lm-evaluation-harness computes them per document before averaging.
* "Highest score" uses ``argmax`` with the **first maximum winning**, exactly as
  lm-evaluation-harness's ``np.argmax`` over log-likelihoods.
* A rate over an empty group is ``None`` (never a ``ZeroDivisionError``, and ``None``
  survives JSON, where NaN does not).  An empty input to a top-level function is an
  error (``ValueError``), since there is nothing to report.
"""
