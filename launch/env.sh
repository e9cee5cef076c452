# Sourced by the launch scripts: the virtual environment, and Open MPI's consent to run as root where we are root.
venv="${MENNDL_VENV:-$HOME/.cache/menndl_py/venv}"
# shellcheck disable=SC1091
source "$venv/bin/activate"
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
