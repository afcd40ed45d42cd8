-- wrk script for bench/counters.sh's server runs: each connection waits 4 ms after a
-- response before it sends its next request. With 256 connections the offered rate is
-- then set by the pacing, not by how fast the server answers, so two builds of one
-- server see about the same req/s and their CPU per request compares like for like.
-- (Unpaced, a faster run batches more completions per loop turn, and CPU per request
-- falls with the batch: the difference between runs is then the load's, not the build's.)
function delay()
   return 4
end
