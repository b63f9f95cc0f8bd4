"""Scale-out on Dask (the optional ``focusfuse[dask]`` extra): a batch's stacks, or one huge stack's tiles, as tasks."""
