"""The suite's checks of itself: an independent meter, the harness's overhead, injected slowdowns and the A/A and
A/B jobs; used by the shipped suite's self-check cases and by the command-line tools in :mod:`loaderbench.tools`."""
