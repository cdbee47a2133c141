/* Was this process started by a parallel launcher (mpirun, srun, mpiexec)?
 * MPI is initialised only then: a plain `vae train` never pays for (or
 * prints anything from) a singleton MPI start-up. */
#ifndef VAE_LAUNCHER_H
#define VAE_LAUNCHER_H

/* The number of processes the launcher started, or 0 when no launcher
 * started this one. Read from the environment the launchers set:
 * OMPI_COMM_WORLD_SIZE (Open MPI's mpirun), PMI_SIZE (MPICH/Hydra, srun
 * --mpi=pmi2), MV2_COMM_WORLD_SIZE (MVAPICH), SLURM_STEP_NUM_TASKS (srun;
 * not SLURM_NTASKS, which a batch script without srun also has).
 * VAE_DISTRIBUTED=0 ignores all of them; VAE_DISTRIBUTED=1 forces MPI on
 * with an unknown count (-1) for launchers not listed here. */
int vae_launcher_process_count(void);
/* The variable that said so (for messages), or NULL. */
const char *vae_launcher_variable(void);

#endif
