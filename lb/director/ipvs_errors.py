"""What ipvsadm 1.31 prints when the kernel refuses a command: libipvs's ipvs_strerror() for the
errno ip_vs_ctl.c returns. lbd refuses the same commands for the same reasons; lbadm prints
these words for them, so that scripts which match ipvsadm's messages keep working."""

NO_SUCH_SERVICE = "No such service"                           # ESRCH: -E, -D, -Z, -L -t
SERVICE_EXISTS = "Service already exists"                     # EEXIST: -A
NO_SCHEDULER = "Scheduler or persistence engine not found"    # ENOENT: -A, -E
SERVICE_NOT_DEFINED = "Service not defined"                   # ESRCH: -a, -e, -d
DEST_EXISTS = "Destination already exists"                    # EEXIST: -a
NO_SUCH_DEST = "No such destination"                          # ENOENT: -e, -d
OUT_OF_RANGE = "Numerical result out of range"                # ERANGE (strerror): -y above -x
