/* The world in a build without MPI (-DVAE_MPI=OFF or MPI not found): this
 * process alone, rank 0 of 1; every collective is a no-op. */
#include <stddef.h>
#include <stdio.h>

#include "distributed/distributed.h"
#include "distributed/launcher.h"

vae_status vae_distributed_init(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    int count = vae_launcher_process_count();
    /* Several copies of a world of one would each train the whole model and
     * write the same files: refuse instead. */
    if (count > 1 || count < 0) {
        char processes[32] = "several";
        if (count > 1) snprintf(processes, sizeof processes, "%d", count);
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "started by a launcher as one of %s processes (%s is set), but this vae was built without "
                         "MPI: install libopenmpi-dev and reconfigure (-DVAE_MPI=ON), or run one process",
                         processes, vae_launcher_variable());
    }
    return VAE_OK;
}

void vae_distributed_finalize(void) {}
int vae_distributed_launched(void) { return 0; }
int vae_distributed_rank(void) { return 0; }
int vae_distributed_size(void) { return 1; }
int vae_distributed_local_rank(void) { return 0; }
const char *vae_distributed_description(void) { return "single process (built without MPI)"; }
int vae_distributed_error_is_shared(void) { return 0; }
vae_status vae_distributed_sum_doubles(double *values, size_t count) { (void)values; (void)count; return VAE_OK; }
vae_status vae_distributed_max_double(double *value) { (void)value; return VAE_OK; }
vae_status vae_distributed_any(int flag, int *result) { *result = flag != 0; return VAE_OK; }
vae_status vae_distributed_broadcast(void *bytes, size_t size, int root) {
    (void)bytes; (void)size; (void)root;
    return VAE_OK;
}
vae_status vae_distributed_barrier(void) { return VAE_OK; }
vae_status vae_distributed_same_everywhere(const void *bytes, size_t size, int *same) {
    (void)bytes; (void)size;
    *same = 1;
    return VAE_OK;
}
vae_status vae_distributed_agree(vae_status local) { return local; }
vae_status vae_distributed_stop_poll(int flag, int *stop) { *stop = flag != 0; return VAE_OK; }
vae_status vae_distributed_stop_finish(void) { return VAE_OK; }
vae_status vae_distributed_prepare(vae_backend *backend) { (void)backend; return VAE_OK; }
vae_status vae_distributed_mean_gradients(vae_backend *backend, float *gradients, size_t count) {
    (void)backend; (void)gradients; (void)count;
    return VAE_OK;
}
void vae_distributed_heartbeat(void) {}
void vae_distributed_device_idle(void) {}
