# C signatures of fastio/_policy.py, so the native twins call the shared policy at C speed.

cpdef int fileno_of(object obj) except -1
cpdef long long check_count(object count, str name=*) except? -2
cpdef double check_timeout(object timeout, str name=*) except? -2.0
cpdef double resolve_timeout(object obj, int fd, object timeout) except? -2.0
cpdef double deadline_after(double budget) except? -2.0
cpdef double remaining(double deadline) except? -2.0
cpdef object with_progress(object exc, long long transferred)
cpdef object error_from_errno(int code, long long transferred=*, object filename=*)
cpdef object timeout_error(long long transferred=*)
cpdef object would_block(long long transferred=*)
cpdef wait_fd(int fd, bint for_write, double deadline, long long transferred=*)

# ---- ring ----
cpdef long long ring_capacity(object capacity, long long page_size) except -1
cpdef long long ring_size(object n, str name=*) except? -2
cpdef tuple frame_header(object header)
cpdef wait_ready(int fd, bint for_write, double budget, double deadline,
                 long long transferred=*)
cpdef tuple ring_find_range(object start, object end, long long length)

# ---- transfer (sendfile, splice, copy, relay) ----
cpdef long long check_offset(object offset) except? -2
