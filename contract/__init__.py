"""The model contract: what producer/, serving/ and flink_job/ agree on.

Event schemas (:mod:`contract.events`), configuration (:mod:`contract.config`), the disjoint
LinUCB math (:mod:`contract.linucb`), the Redis parameter codec (:mod:`contract.codec`) and
store layout (:mod:`contract.store`). This package imports none of the components; they all
import it, so the job and serving cannot disagree about a byte or a formula.
"""

SCHEMA_VERSION = 1
"""Version of the event schema written in every event (``"v"``)."""
