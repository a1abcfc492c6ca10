"""stages/rvos"""
