# Sourced by the GPU check scripts: Open MPI carried as unpacked .debs in
# build-gpu/carry-root (scripts/gpu-carry.sh downloads them, scripts/gpu-check.sh
# unpacks them with dpkg -x) runs relocated from there. Debian's
# alternatives links (mpirun, mpicc) are not in the .debs; they are made
# here. Does nothing where the machine has its own mpirun.
#   source scripts/carried_mpi.sh; vae_use_carried_mpi "$ROOT/build-gpu/carry-root"
vae_use_carried_mpi() {
  local root="$1" arch=x86_64-linux-gnu
  command -v mpirun >/dev/null && return 0
  [ -x "$root/usr/bin/orterun" ] || return 0
  ln -sf mpirun.openmpi "$root/usr/bin/mpirun"
  ln -sf mpiexec.openmpi "$root/usr/bin/mpiexec"
  ln -sf mpicc.openmpi "$root/usr/bin/mpicc"
  # Open MPI finds its plugins and help files from OPAL_PREFIX, PMIx its own
  # plugins from the component path (else it prints "unavailable" notices).
  export OPAL_PREFIX="$root/usr" PATH="$root/usr/bin:$PATH"
  export PMIX_MCA_mca_base_component_path="$root/usr/lib/$arch/pmix2/lib/pmix"
  export LD_LIBRARY_PATH="$root/usr/lib/$arch/openmpi/lib:$root/usr/lib/$arch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
