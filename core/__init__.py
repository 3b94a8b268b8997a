"""The bottom layer: what networks, data, callbacks and commands all share, importing no other project package.

``vocabulary`` (standard parameters, region labels, keypoint names, face-feature size), ``batch`` (the batch's keys
and shapes), ``errors`` (messages for the person at the keyboard), ``files`` (atomic writes), ``frames`` (reading
and compositing frames), ``checkpoint_files`` (reading checkpoints safely), ``run_folder`` (where a run's files go).
"""
