print("diffuse8")
