"""R2AC: the real-time recurrent actor-critic (IMPALA with an exact-RTRL core)."""
