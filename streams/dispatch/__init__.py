"""Many jobs at once per subscriber: key-ordered concurrent dispatch with watermark commits.

```python
from streams.dispatch import DispatchOptions, dispatched_subscriber

@dispatched_subscriber(router, topics.main, options=DispatchOptions(concurrency=64), group_id=group)
async def handle(job: EmailJob) -> None: ...
```

- `scheduler`: which buffered job may start (per-key order, capacity). Pure.
- `offsets`: which offset each partition may commit. Pure.
- `backpressure`: when to pause and resume fetching. Pure.
- `dispatcher`: runs jobs as tasks, commits on a timer, handles rebalance and shutdown.
- `subscriber`, `factory`: the FastStream glue.
"""

from streams.dispatch.dispatcher import Dispatcher, DispatchStats
from streams.dispatch.factory import dispatched_subscriber
from streams.dispatch.options import DispatchOptions
from streams.dispatch.subscriber import DispatchSubscriber

__all__ = ["DispatchOptions", "DispatchStats", "DispatchSubscriber", "Dispatcher", "dispatched_subscriber"]
